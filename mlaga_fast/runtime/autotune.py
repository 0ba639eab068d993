"""``--precision auto`` on a CPU with native bf16: fp32 or bf16, chosen by timing both on this machine.

Whether bf16 pays on a CPU depends on the chip, the kernel library and the shapes: on a 2-core Zen 4
(AVX512-BF16) a SmolLM2-135M Stage-2 step ran 1.71x faster with the frozen weights stored in bf16, while
bf16 *autocast* ran at 0.84x on a 2-core Sapphire Rapids and at 0.41x on an AVX2-only EPYC (bf16
emulated). So no rule is trusted: at a workload's first use on a machine, one step shaped like the
stage's layers runs in fp32 and in bf16 (``Workload``), alternating, and bf16 is chosen when the best
fp32 time is at least ``THRESHOLD`` times the best bf16 time (a margin over timing noise, and over the
casts and fp32 reductions the real step has beyond its matmuls). A CPU without native bf16 (no
AVX512-BF16, no AMX) is never measured: it computes in fp32.

- Stage 2 (``Workload.trains`` False): the LLM is frozen and the backward reaches only its inputs, as
  in training; fp32 weights and inputs against bf16 weights and inputs (no autocast).
  The step is ``layers`` pre-norm decoder blocks (RMSNorm, causal attention over sequences of ``seq``
  tokens, a gated MLP), ``tokens`` tokens in all, of the LLM's hidden and intermediate sizes.
- Stage 1 (``trains`` True): the weights train, so bf16 means autocast over fp32 master weights, and the
  backward also produces the weight gradients. Stage 1 times a copy of its real aligner on real nodes
  (``mlaga_fast.train.align.AlignStage``, through ``time_steps``): on the 2-core Zen 4 the synthetic block
  ran 1.77x faster in bf16 at the demo aligner's width, while the aligner itself ran at 0.85x with torch's
  fused attention kernel, and at 1.38x once bf16 training took the math backend (``cpu_bf16_attention``).

``MLAGA_FAST_AUTOTUNE=0`` turns the measurement off (fp32 on every CPU; the test suite sets it, so that its
runs do not depend on the machine's speed or load).

Timings on a busy machine are noisy (on the shared 2-core Zen 4 at load 6, the Stage-2 block measured
1.11x and the aligner 1.35x, against 1.77x and 0.85-1.02x at lower load): a decision measured while the
1-minute load average exceeds the core count is used but not cached, and every decision records the
load average of its moment; delete the cache file (or pass ``--precision fp32|bf16``) to change it.

The decision is cached per (CPU model, CPU flags, torch version, thread count) in
``$MLAGA_FAST_CACHE/precision/<key>.json`` (else ``$XDG_CACHE_HOME/mlaga_fast/...``, else ``~/.cache/...``,
where mlaga_fast.llm.gguf_cache keeps its LLM copies), one entry per workload, written atomically; the
chosen precision and both timings go into the stage's manifest (``Precision.why``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from mlaga_fast.utils.io import atomic_write_json

__all__ = ["Workload", "THRESHOLD", "SMOLLM2", "choose_cpu_precision", "measure_step_seconds", "time_steps",
           "cache_file", "cpu_identity", "cpu_bf16_attention"]

THRESHOLD = 1.2  # bf16 must be at least this much faster than fp32 to be chosen
SMOLLM2 = {"hidden": 576, "intermediate": 1536, "heads": 9}  # SmolLM2-135M: the default LLM's layer shape
_BUDGET_S = 0.3  # seconds of timed steps per precision (after one untimed warm-up step each)


@dataclass(frozen=True)
class Workload:
    """One training step's shape: ``layers`` decoder blocks over ``tokens`` tokens (sequences of ``seq``)."""
    trains: bool  # the weights train (Stage 1: autocast over fp32 weights) or are frozen (Stage 2: bf16 weights)
    hidden: int
    intermediate: int
    heads: int
    seq: int
    tokens: int
    layers: int = 1
    arch: str = "decoder"  # what runs: the synthetic decoder block, or the name of the real module timed

    def key(self) -> str:
        kind = "trains" if self.trains else "frozen"
        return (f"{kind}-{self.arch}-h{self.hidden}-i{self.intermediate}-a{self.heads}-s{self.seq}-t{self.tokens}"
                f"-l{self.layers}")

    @classmethod
    def llm(cls, hidden: int | None = None, intermediate: int | None = None, heads: int | None = None) -> "Workload":
        """Stage 2: the frozen LLM's layer shape (SmolLM2's where unknown), a batch of 16 prompts of 48 tokens."""
        h = hidden or SMOLLM2["hidden"]
        i = intermediate or (SMOLLM2["intermediate"] if hidden is None else 4 * h)
        a = heads or (SMOLLM2["heads"] if hidden is None else max(1, h // 64))
        return cls(trains=False, hidden=h, intermediate=i, heads=_divisor(h, a), seq=48, tokens=16 * 48)

    @classmethod
    def aligner(cls, dim: int, mlp_ratio: float, heads: int, seq: int, nodes: int, *, layers: int = 1,
                arch: str = "decoder") -> "Workload":
        """Stage 1: the aligner's width and FFN, ``nodes`` nodes of ``seq`` tokens (capped at 2048 tokens, a
        step of ~0.1 s per layer at the demo's width on 2 cores). Stage 1 times its real aligner on real
        nodes (``arch`` names it; mlaga_fast.train.align), the synthetic block being a poor proxy there."""
        seq = max(1, seq)
        nodes = max(1, min(nodes, 2048 // seq))
        return cls(trains=True, hidden=dim, intermediate=max(1, int(round(dim * mlp_ratio))),
                   heads=_divisor(dim, heads), seq=seq, tokens=nodes * seq, layers=layers, arch=arch)


def _divisor(n: int, want: int) -> int:
    a = max(1, min(want, n))
    while n % a:
        a -= 1
    return a


# --- the measurement ----------------------------------------------------------------------------------
def _weights(w: Workload, dtype, trains: bool) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)

    def lin(out_f: int, in_f: int):  # nn.Linear layout [out, in], scaled as at initialisation
        t = (torch.randn(out_f, in_f, generator=g) / in_f ** 0.5).to(dtype)
        return t.requires_grad_(trains)

    return [{"qkv": lin(3 * w.hidden, w.hidden), "o": lin(w.hidden, w.hidden),
             "gate_up": lin(2 * w.intermediate, w.hidden), "down": lin(w.hidden, w.intermediate)}
            for _ in range(w.layers)]


def _rms(x):  # as Llama's RMSNorm: statistics in fp32, result in the input's dtype
    import torch

    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def _forward(w: Workload, x, layers: list[dict]):
    import torch.nn.functional as F

    n_seq, hd = w.tokens // w.seq, w.hidden // w.heads
    for p in layers:
        q, k, v = F.linear(_rms(x), p["qkv"]).view(n_seq, w.seq, 3, w.heads, hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [n_seq, heads, seq, hd]
        x = x + F.linear(a.transpose(1, 2).reshape(w.tokens, w.hidden), p["o"])
        gate, up = F.linear(_rms(x), p["gate_up"]).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate) * up, p["down"])
    return x


def cpu_bf16_attention():
    """The attention backend for bf16 tensors on a CPU: the math backend where gradients are taken, the default
    (flash) one otherwise. Both compute the softmax in fp32. On a 2-core Zen 4 (torch 2.14, 16 x 9 heads x 80
    queries over 104 keys, head dim 64, padding mask) the fused flash kernel's forward+backward took 28.0 ms in
    bf16 against 15.1 ms in fp32, the math backend 15.2 ms in bf16; forward alone (no grad), flash took 13.3 ms
    and math 37.6. On the demo's NC prompts the whole Stage-2 step ran 1.69x faster than fp32 this way, 1.46x
    with the fused kernel (benchmarks/bench_instruct.py, rows "bf16 weights" and "bf16 w, fused")."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not torch.is_grad_enabled():
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _step_fn(w: Workload, mode: str) -> Callable[[], None]:
    """One forward + backward of the workload in ``mode`` (fp32 | bf16), as the stage would run it."""
    import torch

    bf16 = mode == "bf16"
    frozen_bf16 = bf16 and not w.trains
    dtype = torch.bfloat16 if frozen_bf16 else torch.float32
    layers = _weights(w, dtype, w.trains)
    x0 = torch.randn(w.tokens, w.hidden, generator=torch.Generator().manual_seed(1))

    def step() -> None:
        x = x0.clone().requires_grad_(True)  # fp32, as the projectors' (or encoders') outputs arrive
        ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and w.trains)
        attention = cpu_bf16_attention() if bf16 else contextlib.nullcontext()  # as Precision.context
        with ctx, attention:
            y = _forward(w, x.to(dtype), layers)
        y.float().pow(2).mean().backward()
        for p in layers:
            for t in p.values():
                t.grad = None

    return step


def measure_step_seconds(w: Workload, budget_s: float = _BUDGET_S) -> tuple[float, float]:
    """(fp32, bf16) seconds of one step of the synthetic workload (``time_steps``). The workloads are sized
    so that a step takes ~0.1 s on 2 Zen 4 cores."""
    return time_steps({m: _step_fn(w, m) for m in ("fp32", "bf16")}, budget_s)


def time_steps(steps: dict[str, Callable[[], None]], budget_s: float = _BUDGET_S) -> tuple[float, float]:
    """(fp32, bf16) seconds of one call of ``steps["fp32"]`` and ``steps["bf16"]``, each the best of rounds
    run alternately (so that a load change on a shared machine hits both) until each has had ``budget_s``
    seconds, and at least 3 rounds (after one untimed call each)."""
    best = {m: float("inf") for m in steps}
    spent = {m: 0.0 for m in steps}
    for s in steps.values():
        s()  # warm-up: kernel selection, allocator
    rounds = 0
    while rounds < 3 or (min(spent.values()) < budget_s and rounds < 50):
        for m, s in steps.items():
            t0 = time.perf_counter()
            s()
            dt = time.perf_counter() - t0
            best[m], spent[m] = min(best[m], dt), spent[m] + dt
        rounds += 1
    return best["fp32"], best["bf16"]


# --- the cache ----------------------------------------------------------------------------------------
def cpu_identity() -> dict:
    """The CPU model name, a hash of its flags, the torch version and the thread count: what the decision
    depends on besides the shapes."""
    import torch

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:  # the first processor's "model name" and "flags" ("Features" on ARM)
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted((info.get("flags") or info.get("Features") or "").split()))
    return {"cpu": model, "flags": hashlib.sha256(flags.encode()).hexdigest()[:16], "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def cache_file(identity: dict | None = None) -> Path:
    ident = identity or cpu_identity()
    base = os.environ.get("MLAGA_FAST_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "mlaga_fast")
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return Path(base) / "precision" / f"{key}.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or unreadable: measure again and rewrite it
    return data if isinstance(data, dict) and isinstance(data.get("decisions"), dict) else {}


def _loadavg() -> float | None:
    """The 1-minute load average when the decision was measured: a decision taken on a busy machine can be
    spotted in the manifest (delete the cache file, or force --precision, to change it)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# --- the decision -------------------------------------------------------------------------------------
def choose_cpu_precision(w: Workload, *, native: bool,
                         measure: Callable[[Workload], tuple[float, float]] | None = None) -> dict:
    """{"choice": "fp32" | "bf16", "rule", and where measured "fp32_s", "bf16_s", "speedup", "threshold",
    "workload", "cpu", "torch", "cached"}. ``measure``: (fp32 seconds, bf16 seconds) of one step of ``w``
    (default: ``measure_step_seconds``); tests inject their own."""
    if not native:
        return {"choice": "fp32", "rule": "no native bf16 (AVX512-BF16 or AMX) on this CPU; not measured"}
    if os.environ.get("MLAGA_FAST_AUTOTUNE", "1") == "0":
        return {"choice": "fp32", "rule": "not measured: MLAGA_FAST_AUTOTUNE=0 turns the measurement off"}
    ident = cpu_identity()
    path = cache_file(ident)
    data = _read_cache(path)
    hit = data.get("decisions", {}).get(w.key())
    if isinstance(hit, dict) and hit.get("choice") in ("fp32", "bf16"):
        return {**hit, "cached": True}
    fp32_s, bf16_s = (measure or measure_step_seconds)(w)
    if not (fp32_s > 0 and bf16_s > 0):
        raise ValueError(f"precision measurement: step times must be > 0, got fp32 {fp32_s}, bf16 {bf16_s}")
    speedup = fp32_s / bf16_s
    entry = {"choice": "bf16" if speedup >= THRESHOLD else "fp32",
             "rule": f"measured: bf16 is chosen when at least {THRESHOLD}x faster than fp32",
             "fp32_s": fp32_s, "bf16_s": bf16_s, "speedup": round(speedup, 3), "threshold": THRESHOLD,
             "workload": asdict(w), "cpu": ident["cpu"], "torch": ident["torch"], "threads": ident["threads"],
             "loadavg_1min": _loadavg()}
    load = entry["loadavg_1min"]
    if load is not None and load > (os.cpu_count() or 1):
        # more runnable threads than cores: the timings say more about the neighbours than about bf16, so
        # this run uses the decision but the next one measures again
        return {**entry, "cached": False, "not_cached": f"load average {load} > {os.cpu_count()} cores"}
    decisions = {**data.get("decisions", {}), w.key(): entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**ident, "decisions": decisions})
    except OSError:
        pass  # a cache that cannot be written costs a measurement next time, nothing else
    return {**entry, "cached": False}
