"""Triton fused multi-head cross-attention for the aligner's learnable queries (issue 5).

Shapes: q [Bq, H, nq, dh] with Bq in {1, B} (Bq = 1: queries shared by the batch, read with a
batch stride of 0), k, v [B, H, L, dh] (any strides, so the projections' views need no copy),
key-padding mask [B, L] (True = valid). Output [B, H, nq, dh]; a row with no valid key is 0.

Roofline (reference shape B = 4096, nq = 32, L = 334, d = H * dh = 1024, bf16; H100 SXM:
3.35 TB/s HBM, 989 TFLOP/s dense bf16, ridge 989e12 / 3.35e12 = 295 FLOP/byte):

* attention core FLOPs  = 2 matmuls * 2 * B * nq * L * d                = 1.79e11
* attention core bytes  = K + V (2 * B * L * d * 2 B = 5.60e9) + O (2.7e8) + mask (1.4e6)
                          + Q (shared: 6.6e4; per batch: 2.7e8)          = 5.87e9 .. 6.14e9
  -> 30.5 (shared q) / 29.2 (per-batch q) FLOP/byte, 10x below the ridge: memory-bound; the
  floor is 5.87e9 B / 3.35 TB/s = 1.75 ms, while its FLOPs need only 0.18 ms.
* K and V projections   = 2 * (2 * B * L * d * d)                        = 5.74e12
  -> d / nq = 32x the core's FLOPs (not 24x); a GEMM with K-dim 1024 sits at ~680 FLOP/byte,
  compute-bound: 5.8 ms at peak.
* materialising K and V: write 5.6e9 B + read back 5.6e9 B = 4.0x the bytes of X (2.8e9 B).

Choice. Fusing attention (scores, mask, online softmax, PV, fp32 accumulation) is the minimum and
what this file does: K and V are read exactly once, scores never touch HBM, padded keys are not
even loaded (their loads are masked off), the shared queries stay in L1/L2. Fusing the K/V
projection as well would save at most the K/V round trip: unfused = 5.8 ms (GEMM, compute-bound,
its K/V write overlapped) + 1.75 ms (this kernel) = 7.55 ms; fused >= 5.98 ms of tensor-core
time, i.e. <= 21% gain, and only if a Triton kernel matched cuBLAS on the [L, d] x [d, 2d] GEMM
while also running the softmax. Backward needs dK and dV anyway to form dWk = X^T dK and
dWv = X^T dV (or a batch-wide split-K reduction inside the kernel), so for training the gain
shrinks further. Not worth the risk: the module instead reads X once with ONE GEMM against the
concatenated [Wk; Wv] and hands this kernel strided views of its output (no transpose copies).
The larger lever, left for later, is algebraic: softmax is invariant to the key bias and
scores_h = (q_h Wk_h) X^T, so attending with H * nq = 512 absorbed queries of width d directly
over X (and applying Wv_h after PV) costs 4 * B * L * d * H * nq + 2 * B * nq * d^2 = 3.1e12
FLOPs, 0.53x of projection + core, with X read once; it needs a d-tiled kernel (dh = 1024).

Expected on H100 SXM at B = 4096 (bf16): forward ~2.0-2.3 ms (75-85% of the 1.75 ms floor);
forward + backward: bytes 5.87e9 + 1.18e10 (reads q, K, V, O, dO; writes dK, dV, dq partials)
-> 5.3 ms floor, ~6.5-7.5 ms expected.

Numerics: every load is converted to the accumulator type when UPCAST (fp32 inputs, fp64
inputs, and always under TRITON_INTERPRET where bf16 arithmetic is unreliable); on a GPU with
fp16/bf16 inputs the tensor-core dots take the native type and accumulate in fp32. The softmax
runs in base 2 (exp2 with scale * log2(e) folded into the scores); LSE is stored in base 2.
A row whose keys are all masked keeps l = 0: its output is 0, its LSE is finite, and in the
backward every p = exp2(-inf - lse) = 0, so its gradients are exactly 0 (never NaN).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

LOG2E = 1.4426950408889634

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _fwd_kernel(
    Q, K, V, MASK, O, LSE,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mn,
    stride_ob, stride_oh, stride_om, stride_od,
    H, NQ, L, DH, qk_scale,
    HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # axis 0 = B * H (can exceed CUDA's 65535 limit of axes 1/2), axis 1 = query blocks
    pid_bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)  # int64: b * stride_kb overflows int32 at B = 8192
    h = (pid_bh % H).to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < NQ
    d_ok = offs_d < DH  # head dim padded to a power of two: masked loads fill 0

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # [BM, BD]
    if UPCAST:
        q = q.to(ACC)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    # finite sentinel instead of -inf so alpha = exp2(m_old - m_new) never becomes NaN
    m_i = tl.full([BLOCK_M], -1.0e30, ACC)
    l_i = tl.zeros([BLOCK_M], ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for start_n in range(0, L, BLOCK_N):
        offs_n = start_n + offs_n0
        n_ok = offs_n < L
        if HAS_MASK:
            keep = tl.load(MASK + b * stride_mb + offs_n * stride_mn, mask=n_ok, other=0)
            n_ok = n_ok & (keep != 0)
        kv_mask = n_ok[:, None] & d_ok[None, :]  # padded keys are never read from HBM
        k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(ACC)
        s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PREC) * qk_scale  # [BM, BN]
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])  # [BM, BN]; masked keys -> 0
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        if UPCAST:
            v = v.to(ACC)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, out_dtype=ACC, input_precision=PREC)
        m_i = m_new

    has_key = l_i > 0
    l_safe = tl.where(has_key, l_i, 1.0)
    out = acc / l_safe[:, None]  # rows without a valid key: 0 / 1 = 0
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    lse = m_i + tl.log2(l_safe)  # finite for empty rows too (m_i = -1e30)
    tl.store(LSE + pid_bh.to(tl.int64) * NQ + offs_m, lse.to(LSE.dtype.element_ty), mask=m_ok)


@triton.jit
def _bwd_kernel(
    Q, K, V, MASK, O, DO, LSE, DQ, DK, DV,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mn,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    B, H, NQ, L, DH, G, sm_scale, qk_scale,
    HAS_MASK: tl.constexpr, SHARED_Q: tl.constexpr, SINGLE_M: tl.constexpr,
    UPCAST: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One program = (group of G batches, head). dK/dV/dQ come from one pass over the keys.

    DK, DV: contiguous [B, H, L, dh] in the inputs' dtype. Each key block of each (batch, head) is
    finished in registers and stored exactly once, on both paths (SINGLE_M: one query block;
    otherwise the query blocks are the inner loop), so they need no atomics and no zeroing.
    DQ: fp32 [slots, H, nq, dh]; slot = batch (per-batch q, G = 1) or group (shared q: partial
    sums over the group's batches, summed over slots by the launcher). Only DQ of the
    multi-query-block path is accumulated with atomics (zero-initialised).
    """
    pid = tl.program_id(0)
    g = pid // H
    h = (pid % H).to(tl.int64)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < DH
    b_start = g * G
    b_end = tl.minimum(b_start + G, B)
    dq_slot = DQ + g.to(tl.int64) * H * NQ * DH + h * NQ * DH  # used by SHARED_Q

    if SINGLE_M:
        # nq <= BLOCK_M: q, dO and the dq accumulator stay in registers for the whole program
        offs_m = offs_m0
        m_ok = offs_m < NQ
        md_ok = m_ok[:, None] & d_ok[None, :]
        dq_acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
        for bb in range(b_start, b_end):
            b = tl.cast(bb, tl.int64)
            q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                        + offs_d[None, :] * stride_qd, mask=md_ok, other=0.0)
            do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                         + offs_d[None, :] * stride_dod, mask=md_ok, other=0.0)
            o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
                        + offs_d[None, :] * stride_od, mask=md_ok, other=0.0)
            delta = tl.sum(do.to(ACC) * o.to(ACC), 1)  # [BM] = rowsum(dO * O)
            lse = tl.load(LSE + (b * H + h) * NQ + offs_m, mask=m_ok, other=0.0).to(ACC)
            if UPCAST:
                q = q.to(ACC)
                do = do.to(ACC)
            if not SHARED_Q:
                dq_acc = tl.zeros([BLOCK_M, BLOCK_D], ACC)
            for start_n in range(0, L, BLOCK_N):
                offs_n = start_n + offs_n0
                n_in = offs_n < L
                n_ok = n_in
                if HAS_MASK:
                    keep = tl.load(MASK + b * stride_mb + offs_n * stride_mn, mask=n_in, other=0)
                    n_ok = n_in & (keep != 0)
                kv_mask = n_ok[:, None] & d_ok[None, :]
                k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn
                            + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
                v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn
                            + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
                if UPCAST:
                    k = k.to(ACC)
                    v = v.to(ACC)
                s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PREC) * qk_scale
                s = tl.where(n_ok[None, :], s, float("-inf"))
                # [BM, BN]; 0 for masked keys. Padded query rows (m >= NQ) load q = 0 and lse = 0, so
                # their p is 1 on valid keys, but their dO and O are 0: they add nothing to dV,
                # ds = p * (dp - delta) = 0, so nothing to dK or dQ either.
                p = tl.exp2(s - lse[:, None])
                dv = tl.dot(tl.trans(p.to(do.dtype)), do, out_dtype=ACC, input_precision=PREC)  # [BN, BD]
                dp = tl.dot(do, tl.trans(v), out_dtype=ACC, input_precision=PREC)  # [BM, BN]
                ds = p * (dp - delta[:, None])  # d(loss)/d(unscaled-by-sm_scale logits)
                dk = tl.dot(tl.trans(ds.to(q.dtype)), q, out_dtype=ACC, input_precision=PREC) * sm_scale
                dq_acc += tl.dot(ds.to(k.dtype), k, out_dtype=ACC, input_precision=PREC)
                out_mask = n_in[:, None] & d_ok[None, :]  # every row < L written: padded keys get 0
                kv_off = (b * H + h) * L * DH + offs_n[:, None] * DH + offs_d[None, :]
                tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=out_mask)
                tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=out_mask)
            if not SHARED_Q:
                dq_ptrs = DQ + (b * H + h) * NQ * DH + offs_m[:, None] * DH + offs_d[None, :]
                tl.store(dq_ptrs, (dq_acc * sm_scale).to(DQ.dtype.element_ty), mask=md_ok)
        if SHARED_Q:
            dq_ptrs = dq_slot + offs_m[:, None] * DH + offs_d[None, :]
            tl.store(dq_ptrs, (dq_acc * sm_scale).to(DQ.dtype.element_ty), mask=md_ok)
    else:
        # nq > BLOCK_M (rare): key blocks outer, query blocks inner; dK/dV finished per key
        # block in registers, dq accumulated with atomics into the fp32 buffer (zeroed).
        for bb in range(b_start, b_end):
            b = tl.cast(bb, tl.int64)
            if SHARED_Q:
                dq_base = dq_slot
            else:
                dq_base = DQ + (b * H + h) * NQ * DH
            for start_n in range(0, L, BLOCK_N):
                offs_n = start_n + offs_n0
                n_in = offs_n < L
                n_ok = n_in
                if HAS_MASK:
                    keep = tl.load(MASK + b * stride_mb + offs_n * stride_mn, mask=n_in, other=0)
                    n_ok = n_in & (keep != 0)
                kv_mask = n_ok[:, None] & d_ok[None, :]
                k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn
                            + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
                v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn
                            + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
                if UPCAST:
                    k = k.to(ACC)
                    v = v.to(ACC)
                dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
                dv = tl.zeros([BLOCK_N, BLOCK_D], ACC)
                for start_m in range(0, NQ, BLOCK_M):
                    offs_m = start_m + offs_m0
                    m_ok = offs_m < NQ
                    md_ok = m_ok[:, None] & d_ok[None, :]
                    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                                + offs_d[None, :] * stride_qd, mask=md_ok, other=0.0)
                    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom
                                 + offs_d[None, :] * stride_dod, mask=md_ok, other=0.0)
                    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
                                + offs_d[None, :] * stride_od, mask=md_ok, other=0.0)
                    delta = tl.sum(do.to(ACC) * o.to(ACC), 1)
                    lse = tl.load(LSE + (b * H + h) * NQ + offs_m, mask=m_ok, other=0.0).to(ACC)
                    if UPCAST:
                        q = q.to(ACC)
                        do = do.to(ACC)
                    s = tl.dot(q, tl.trans(k), out_dtype=ACC, input_precision=PREC) * qk_scale
                    s = tl.where(n_ok[None, :], s, float("-inf"))
                    p = tl.exp2(s - lse[:, None])
                    dv += tl.dot(tl.trans(p.to(do.dtype)), do, out_dtype=ACC, input_precision=PREC)
                    dp = tl.dot(do, tl.trans(v), out_dtype=ACC, input_precision=PREC)
                    ds = p * (dp - delta[:, None])
                    dk += tl.dot(tl.trans(ds.to(q.dtype)), q, out_dtype=ACC, input_precision=PREC)
                    dq_part = tl.dot(ds.to(k.dtype), k, out_dtype=ACC, input_precision=PREC) * sm_scale
                    tl.atomic_add(dq_base + offs_m[:, None] * DH + offs_d[None, :],
                                  dq_part.to(DQ.dtype.element_ty), mask=md_ok)
                out_mask = n_in[:, None] & d_ok[None, :]
                kv_off = (b * H + h) * L * DH + offs_n[:, None] * DH + offs_d[None, :]
                tl.store(DK + kv_off, (dk * sm_scale).to(DK.dtype.element_ty), mask=out_mask)
                tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=out_mask)


# ----------------------------------------------------------------------------------- launchers
def _acc_types(dtype: torch.dtype):
    """(UPCAST, ACC, PREC, lse dtype) for an input dtype."""
    if dtype == torch.float64:
        return True, tl.float64, "ieee", torch.float64
    if dtype == torch.float32:
        # "ieee", not tf32: fp32 callers asked for fp32 accuracy
        return True, tl.float32, "ieee", torch.float32
    # fp16/bf16: native tensor-core inputs on a GPU; fp32 everywhere under the interpreter
    return _INTERPRET, tl.float32, "ieee", torch.float32


def _block_m(nq: int) -> int:
    return min(64, max(16, triton.next_power_of_2(nq)))


def _block_d(dh: int) -> int:
    return max(16, triton.next_power_of_2(dh))


def _fwd_block_n(L: int, block_d: int) -> int:
    # big key blocks amortise the per-iteration softmax rescale; keep registers in check for dh 128+
    cap = 64 if block_d >= 128 else 128
    return min(cap, max(16, triton.next_power_of_2(L)))


_FWD_TUNED = None


def _fwd_tuned():
    """Forward kernel autotuned over key-block size / warps / stages; real GPUs only."""
    global _FWD_TUNED
    if _FWD_TUNED is None:
        configs = [
            triton.Config({"BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bn in (32, 64, 128) for w in (4, 8) for s in (2, 3, 4)
        ]
        # the forward only writes O and LSE (pure function of inputs): safe to re-run while tuning
        _FWD_TUNED = triton.autotune(configs, key=["NQ", "L", "DH", "HAS_MASK", "UPCAST", "BLOCK_M", "BLOCK_D"])(
            _fwd_kernel
        )
    return _FWD_TUNED


def _mask_arg(mask: torch.Tensor | None, ref: torch.Tensor):
    if mask is None:
        return ref, 0, 0, False  # dummy pointer, never read
    m = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    return m, m.stride(0), m.stride(1), True


def cross_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                        scale: float, autotune: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward. Inputs already validated by mlaga_fast.ops.cross_attention.

    Returns out [B, H, nq, dh] (q's dtype, contiguous) and lse [B, H, nq] (base-2 log-sum-exp of
    the scaled scores; fp32, fp64 for fp64 inputs), which the backward needs.
    """
    B, H, L, dh = k.shape
    nq = q.shape[2]
    upcast, acc, prec, lse_dtype = _acc_types(q.dtype)
    out = torch.empty((B, H, nq, dh), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, nq), dtype=lse_dtype, device=q.device)
    m, smb, smn, has_mask = _mask_arg(mask, k)
    sqb = 0 if q.shape[0] == 1 else q.stride(0)  # shared queries: every batch reads the same rows
    BM, BD = _block_m(nq), _block_d(dh)
    args = (q, k, v, m, out, lse,
            sqb, q.stride(1), q.stride(2), q.stride(3),
            *k.stride(), *v.stride(), smb, smn, *out.stride(),
            H, nq, L, dh, float(scale) * LOG2E)
    meta = dict(HAS_MASK=has_mask, UPCAST=upcast, ACC=acc, PREC=prec, BLOCK_M=BM, BLOCK_D=BD)
    grid = (B * H, triton.cdiv(nq, BM))
    if autotune is None:
        autotune = not _INTERPRET and q.is_cuda
    if autotune:
        _fwd_tuned()[grid](*args, **meta)
    else:
        _fwd_kernel[grid](*args, BLOCK_N=_fwd_block_n(L, BD), **meta)
    return out, lse


def _bwd_group(B: int, H: int, shared_q: bool, device: torch.device) -> int:
    """Batches per program. Per-batch q: 1. Shared q: enough programs to fill the GPU (~8 per SM),
    the rest folded into each program so the dq partial buffer stays small."""
    if not shared_q:
        return 1
    if device.type != "cuda":
        return max(1, B)  # interpreter: fewest programs is fastest
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    target = 8 * sms
    return max(1, min(16, (B * H) // max(1, target)))


def cross_attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None, out: torch.Tensor, lse: torch.Tensor,
                        scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) with the shapes and dtypes of (q, k, v); dk/dv contiguous."""
    B, H, L, dh = k.shape
    nq = q.shape[2]
    shared_q = q.shape[0] == 1 and B > 1
    upcast, acc, prec, _ = _acc_types(q.dtype)
    BM, BD = _block_m(nq), _block_d(dh)
    single_m = nq <= BM
    BN = 32 if BD >= 128 else 64  # backward holds 4 [BM|BN, BD] tiles live: smaller key blocks
    if _INTERPRET:
        BN = min(128, max(16, triton.next_power_of_2(L)))
    G = _bwd_group(B, H, shared_q, q.device)
    n_groups = triton.cdiv(B, G)
    # dk/dv rows are each written exactly once (see _bwd_kernel) -> empty, inputs' dtype. dq: every
    # slot written once when single_m, else accumulated with atomics over query blocks -> zeros.
    dk = torch.empty((B, H, L, dh), dtype=k.dtype, device=k.device)
    dv = torch.empty((B, H, L, dh), dtype=v.dtype, device=v.device)
    dq_acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    slots = n_groups if shared_q else B
    dq_buf = (torch.empty if single_m else torch.zeros)((slots, H, nq, dh), dtype=dq_acc_dtype, device=q.device)
    m, smb, smn, has_mask = _mask_arg(mask, k)
    sqb = 0 if q.shape[0] == 1 else q.stride(0)
    args = (q, k, v, m, out, do, lse, dq_buf, dk, dv,
            sqb, q.stride(1), q.stride(2), q.stride(3),
            *k.stride(), *v.stride(), smb, smn, *out.stride(), *do.stride(),
            B, H, nq, L, dh, G, float(scale), float(scale) * LOG2E)
    meta = dict(HAS_MASK=has_mask, SHARED_Q=shared_q, SINGLE_M=single_m, UPCAST=upcast, ACC=acc, PREC=prec,
                BLOCK_M=BM, BLOCK_D=BD, num_warps=4 if BD <= 64 else 8)
    # not autotuned (the dq atomics make re-runs unsafe); on GPUs with little shared memory (fp32,
    # dh 128) fall back to smaller key blocks / fewer stages instead of failing. A failed
    # compile launches nothing, so retrying is safe.
    tries = [(BN, 2), (max(16, BN // 2), 1), (16, 1)]
    for i, (bn, stages) in enumerate(tries):
        try:
            _bwd_kernel[(n_groups * H,)](*args, BLOCK_N=bn, num_stages=stages, **meta)
            break
        except OutOfResources:
            if i == len(tries) - 1:
                raise
    dq = dq_buf.sum(0, keepdim=True) if shared_q else dq_buf
    return dq.to(q.dtype), dk, dv


__all__ = ["cross_attention_fwd", "cross_attention_bwd", "LOG2E"]
