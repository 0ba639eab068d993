// Zero-filled arrays backed by transparent huge pages where the kernel allows (madvise).
//
// Why: the PPR push reads its scratch and the graph's per-node arrays at random. With 4 KiB pages
// a 16 MiB array spans 4096 pages, more than the TLB holds, so nearly every random read would
// also miss the TLB; with 2 MiB pages it spans 8. Anonymous mappings are zero-filled and
// committed lazily, page by page, so a large array costs only what is touched. Arrays under 2 MiB
// keep 4 KiB pages: a huge page would commit (and zero) 2 MiB at the first touch.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

namespace mlaga {

template <typename T>
class HugeArray {
 public:
  HugeArray() = default;
  // size elements, all zero bits. Throws std::bad_alloc when the mapping fails.
  explicit HugeArray(size_t size) : size_(size) {
    const size_t huge = size_t(2) << 20;
    const size_t bytes = size * sizeof(T) > 0 ? size * sizeof(T) : 1;
    const bool use_huge = bytes >= huge;
    map_bytes_ = use_huge ? (bytes + huge - 1) / huge * huge + huge : bytes;  // room to align to 2 MiB
    void* m = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::bad_alloc();
    base_ = m;
    data_ = static_cast<T*>(m);
    if (use_huge) {
      const uintptr_t a = (reinterpret_cast<uintptr_t>(m) + huge - 1) / huge * huge;
      data_ = reinterpret_cast<T*>(a);
#ifdef MADV_HUGEPAGE
      madvise(data_, map_bytes_ - (a - reinterpret_cast<uintptr_t>(m)), MADV_HUGEPAGE);
#endif
    }
  }
  ~HugeArray() {
    if (base_ != nullptr) munmap(base_, map_bytes_);
  }
  HugeArray(const HugeArray&) = delete;
  HugeArray& operator=(const HugeArray&) = delete;
  HugeArray(HugeArray&& o) noexcept { swap(o); }
  HugeArray& operator=(HugeArray&& o) noexcept {
    swap(o);
    return *this;
  }
  void swap(HugeArray& o) noexcept {
    std::swap(base_, o.base_);
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(map_bytes_, o.map_bytes_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

 private:
  void* base_ = nullptr;
  T* data_ = nullptr;
  size_t size_ = 0;
  size_t map_bytes_ = 0;
};

}  // namespace mlaga
