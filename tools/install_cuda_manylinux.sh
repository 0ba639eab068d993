#!/usr/bin/env bash
# Installs the CUDA compiler and static runtime into a manylinux_2_28 (AlmaLinux 8) image, for the
# mlaga-fast-cu12 wheels (cibuildwheel's before-all in .github/workflows/wheels.yml).
# usage: bash tools/install_cuda_manylinux.sh [VERSION]   e.g. 12-8 (default)
# Only nvcc, the CUDA headers and libcudart_static are needed: _C links the runtime statically.
set -euo pipefail
ver=${1:-12-8}
case "$(uname -m)" in
  x86_64) repo=x86_64 ;;
  aarch64) repo=sbsa ;;
  *) echo "install_cuda_manylinux: no CUDA repository for $(uname -m)" >&2; exit 2 ;;
esac
dnf install -y 'dnf-command(config-manager)'
dnf config-manager --add-repo "https://developer.download.nvidia.com/compute/cuda/repos/rhel8/${repo}/cuda-rhel8.repo"
dnf install -y "cuda-nvcc-${ver}" "cuda-cudart-devel-${ver}"
dnf clean all
/usr/local/cuda/bin/nvcc --version
