"""--precision: what each setting resolves to on CPU, how ``auto`` chooses by measurement (with an injected
timer, so nothing here depends on this machine's speed), its cache, the manifest's record of both timings,
and bf16 against fp32 in both stages (mlaga_fast/runtime/precision.py, mlaga_fast/runtime/autotune.py).

Tolerances come from bf16's unit roundoff u = 2^-8 (8 significant bits) and the depth. A bf16 matmul with
fp32 accumulation rounds both operands, a relative error of at most ~2u per product; to first order the
errors of the matmuls a quantity passes through add up. In a Llama layer the residual stream crosses four
matmul stages (qkv, o, gate/up, down), and the LM head is one more: the loss's relative error is at most
2u(4L + 1), and the gradient reaching the node tokens, which crosses them forward and back, 2u(8L + 2).
"""
import copy
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlaga_fast.runtime import autotune, precision as precision_mod
from mlaga_fast.runtime.autotune import THRESHOLD, Workload, choose_cpu_precision
from mlaga_fast.runtime.precision import Precision, resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))

U = 2.0 ** -8  # bf16 unit roundoff


@pytest.fixture(autouse=True)
def measuring(monkeypatch):
    """The suite's conftest turns auto's measurement off; these tests are about it (timers injected, and the
    load average pinned to 0 so that this machine's load does not decide what is cached)."""
    monkeypatch.setenv("MLAGA_FAST_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_loadavg", lambda: 0.0)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLAGA_FAST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def native(monkeypatch):
    """Pretend this CPU has native bf16 (the decision logic under test; no bf16 kernel runs)."""
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: True)


class Timer:
    """An injected measurement: fixed (fp32, bf16) step seconds, counting its calls."""

    def __init__(self, fp32_s: float, bf16_s: float):
        self.times, self.calls = (fp32_s, bf16_s), 0

    def __call__(self, w: Workload) -> tuple[float, float]:
        self.calls += 1
        return self.times


def never(w: Workload):
    raise AssertionError("measured, but nothing should have been")


@pytest.mark.parametrize("frozen", [True, False])
def test_forced_values_are_respected_and_never_measured(frozen, monkeypatch, cache):
    for has_bf16 in (True, False):
        monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: has_bf16)
        assert resolve_precision("fp32", "cpu", frozen_weights=frozen, measure=never) == Precision("fp32", "float32", None)
        bf16 = resolve_precision("bf16", "cpu", frozen_weights=frozen, measure=never)
        if frozen and has_bf16:  # Stage 2 on native bf16: the weights are stored in bf16, no autocast
            assert bf16 == Precision("bf16", "bfloat16", None)
        else:  # trained weights (Stage 1), or emulated bf16: autocast over fp32 weights
            assert bf16 == Precision("bf16", "float32", "bfloat16")
            a, b = torch.randn(4, 8), torch.randn(8, 3)
            with bf16.context("cpu"):
                out = a @ b
            assert out.dtype == torch.bfloat16
            torch.testing.assert_close(out.float(), a @ b, rtol=2 * 8 * U, atol=2 * 8 * U)
        assert bf16.why == {"rule": "--precision bf16"}
    assert not cache.exists()  # nothing measured, nothing cached


@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("fp32_s,bf16_s,expect", [(1.0, 0.5, "bf16"), (1.2, 1.0, "bf16"), (1.0, 0.9, "fp32"),
                                                   (1.0, 1.5, "fp32")])
def test_auto_chooses_bf16_only_when_measured_at_least_1_2x_faster(frozen, fp32_s, bf16_s, expect, native, cache):
    timer = Timer(fp32_s, bf16_s)
    p = resolve_precision("auto", "cpu", frozen_weights=frozen, measure=timer)
    assert timer.calls == 1 and p.name == expect and THRESHOLD == 1.2
    if expect == "fp32":
        assert p == Precision("fp32", "float32", None)
    else:
        assert p == (Precision("bf16", "bfloat16", None) if frozen else Precision("bf16", "float32", "bfloat16"))
    rec = p.to_dict()["why"]  # what the manifest records
    assert (rec["fp32_s"], rec["bf16_s"], rec["choice"], rec["cached"]) == (fp32_s, bf16_s, expect, False)
    assert rec["speedup"] == pytest.approx(fp32_s / bf16_s, abs=1e-3)
    assert rec["workload"]["trains"] is (not frozen)


def test_autotune_off_is_fp32_unmeasured(monkeypatch, native, cache):
    monkeypatch.setenv("MLAGA_FAST_AUTOTUNE", "0")
    p = resolve_precision("auto", "cpu", frozen_weights=True, measure=never)
    assert p == Precision("fp32", "float32", None) and "MLAGA_FAST_AUTOTUNE=0" in p.why["rule"]
    assert not cache.exists()


def test_auto_measures_unless_turned_off(monkeypatch, native, cache):
    """Without MLAGA_FAST_AUTOTUNE, auto measures on a CPU with native bf16 (only the test suite turns it off)."""
    monkeypatch.delenv("MLAGA_FAST_AUTOTUNE")
    timer = Timer(2.0, 1.0)
    p = resolve_precision("auto", "cpu", frozen_weights=True, measure=timer)
    assert timer.calls == 1 and p == Precision("bf16", "bfloat16", None) and p.why["speedup"] == 2.0


def test_cpu_without_native_bf16_is_never_measured_into_bf16(monkeypatch, cache):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: False)
    for frozen in (True, False):
        p = resolve_precision("auto", "cpu", frozen_weights=frozen, measure=never)
        assert p == Precision("fp32", "float32", None) and "not measured" in p.why["rule"]
    assert not cache.exists()


def test_decision_is_cached_per_cpu_torch_and_workload(cache, monkeypatch):
    w = Workload.llm(64, 128, 4)
    first = Timer(2.0, 1.0)
    a = choose_cpu_precision(w, native=True, measure=first)
    b = choose_cpu_precision(w, native=True, measure=never)  # the cached decision, not a new measurement
    assert first.calls == 1 and a["choice"] == b["choice"] == "bf16" and b["cached"] and not a["cached"]
    assert (b["fp32_s"], b["bf16_s"]) == (2.0, 1.0)
    files = list((cache / "precision").glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    ident = autotune.cpu_identity()
    assert {k: stored[k] for k in ident} == ident and stored["torch"] == torch.__version__
    assert list(stored["decisions"]) == [w.key()]
    # another workload shape is measured on its own and kept beside the first
    other = Timer(1.0, 1.0)
    assert choose_cpu_precision(Workload.llm(), native=True, measure=other)["choice"] == "fp32" and other.calls == 1
    assert len(json.loads(files[0].read_text())["decisions"]) == 2
    # another torch version (or CPU) has its own cache file: measured again
    monkeypatch.setattr(autotune, "cpu_identity", lambda: {**ident, "torch": "0.0.0"})
    again = Timer(1.0, 2.0)
    assert choose_cpu_precision(w, native=True, measure=again)["choice"] == "fp32" and again.calls == 1
    assert len(list((cache / "precision").glob("*.json"))) == 2
    # a measurement on a machine busier than its cores is used but not cached
    monkeypatch.setattr(autotune, "_loadavg", lambda: float(os.cpu_count() + 1))
    busy = Workload.llm(32, 64, 2)
    for _ in range(2):
        t = Timer(2.0, 1.0)
        rec = choose_cpu_precision(busy, native=True, measure=t)
        assert t.calls == 1 and rec["choice"] == "bf16" and "not_cached" in rec
    assert all(busy.key() not in json.loads(f.read_text())["decisions"] for f in (cache / "precision").glob("*.json"))
    monkeypatch.setattr(autotune, "_loadavg", lambda: 0.0)
    # an unreadable cache file is measured over and rewritten
    monkeypatch.setattr(autotune, "cpu_identity", lambda: ident)
    files[0].write_text("{not json")
    fresh = Timer(3.0, 1.0)
    assert choose_cpu_precision(w, native=True, measure=fresh)["choice"] == "bf16" and fresh.calls == 1
    assert json.loads(files[0].read_text())["decisions"][w.key()]["fp32_s"] == 3.0


def test_real_measurement_times_both_precisions_of_a_tiny_step():
    """The default timer runs (no assertion on which is faster: that is the machine's business)."""
    w = Workload.llm(32, 64, 2)
    fp32_s, bf16_s = autotune.measure_step_seconds(w, budget_s=0.01)
    assert 0 < fp32_s < 10 and 0 < bf16_s < 10
    a = Workload.aligner(16, 4.0, 3, 7, 5000)  # heads made to divide the width; tokens capped at 2048
    assert (a.heads, a.tokens, a.intermediate, a.trains) == (2, 2048 // 7 * 7, 64, True)
    assert min(autotune.measure_step_seconds(a, budget_s=0.01)) > 0


# --- bf16 against fp32 --------------------------------------------------------------------------------------
WORDS = [f"w{i}" for i in range(40)]
TEXTS = [" ".join(WORDS[(5 * i + j) % 40] for j in range(4 + i % 5)) for i in range(12)]
CLASSES = ["Alpha", "Beta Gamma", "Delta", "Beta"]


@pytest.mark.parametrize("layers", [2, 4])
def test_bf16_weights_and_autocast_agree_with_fp32_within_the_roundoff_bound(tmp_path, layers):
    """On real prompts through a tiny Llama (init std 0.2, so the layers mix), with and without LoRA adapters
    (their B made non-zero so they act): the loss and the gradient reaching the projectors in bf16 (weights
    cast to bf16, and autocast) against fp32, within the bounds of the module docstring."""
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.llm import LLMOptions, load_llm
    from mlaga_fast.models.graph_llm import GraphLLM, bf16_agreement, frozen_to_bf16
    from mlaga_fast.models.projector import ProjectorConfig, Projectors
    from mlaga_fast.prompts import PromptBuilder, TruncationPolicy
    from mlaga_fast.prompts.batch import NodeInputs, collate

    torch.set_num_threads(1)
    folder = build_tiny_llm(tmp_path / "llm", WORDS + CLASSES, init_std=0.2, layers=layers)
    loss_tol, grad_tol = 2 * U * (4 * layers + 1), 2 * U * (8 * layers + 2)
    for lora in (False, True):
        torch.manual_seed(0)
        model, tok, _ = load_llm(str(folder), LLMOptions(lora=lora, lora_r=2))
        if lora:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if "lora_B" in n:
                        p.normal_(0, 0.1)
        b = PromptBuilder(tok, 2, TEXTS, CLASSES, TruncationPolicy(300, 6, 3), image_tokens=1)
        exs = [b.nc(0, [1, 2], [0, 1], label=1), b.nc(5, [], [], label=2), b.nc(9, [10], [3], label=3),
               b.nc(7, [2, 3, 4], [0, 0, 1], label=0)]
        for seed in range(2):
            rng = np.random.default_rng(seed)
            inputs = [NodeInputs(rng.normal(size=(12, 2, 8)).astype(np.float16),
                                 rng.normal(size=(12, 6)).astype(np.float32))]
            torch.manual_seed(seed)
            proj = Projectors(ProjectorConfig(graph_dim=8, out_dim=64, kind="modality", image_dim=6))
            gl = GraphLLM(model, tok, proj, Precision("fp32", "float32", None), "cpu")
            batch = collate(exs, tok.pad_token_id, inputs, with_answer=True)
            for mode in ("weights", "autocast"):
                agree = bf16_agreement(gl, batch, mode=mode)
                assert agree["mode"] == mode and math.isfinite(agree["loss_bf16"])
                assert agree["loss_rel_diff"] <= loss_tol, (lora, seed, mode, agree)
                assert 0 < agree["grad_rel_err"] <= grad_tol, (lora, seed, mode, agree)  # bf16 did round
                assert 1 - agree["grad_cosine"] <= grad_tol ** 2 / 2
            assert all(p.dtype == torch.float32 for p in model.parameters())  # the fp32 model was left alone
        # the bf16 copy: every frozen weight in bf16, the LoRA adapters (trainable) in fp32
        keep = {n for n, p in model.named_parameters() if p.requires_grad}
        assert bool(keep) == lora
        cast = frozen_to_bf16(copy.deepcopy(model), keep=keep)
        assert {(n in keep, p.dtype) for n, p in cast.named_parameters()} == (
            {(False, torch.bfloat16)} | ({(True, torch.float32)} if lora else set()))


def test_lora_adapters_stay_fp32_on_a_bf16_base(tmp_path):
    """Stage 2 in bf16 weights: the base model is bf16, the adapters and their gradients fp32."""
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.llm import LLMOptions, load_llm

    folder = build_tiny_llm(tmp_path / "llm", WORDS)
    model, _, _ = load_llm(str(folder), LLMOptions(dtype="bfloat16", lora=True, lora_r=2))
    train = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    assert train and set(train.values()) == {torch.float32} and all("lora_" in n for n in train)
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    x = torch.randn(2, 5, 64, requires_grad=True)  # fp32 inputs, cast at the splice as Stage 2 does
    model(inputs_embeds=x.to(torch.bfloat16)).logits.float().pow(2).mean().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_stage_manifests_record_the_measured_choice_and_bf16_stages_train(tmp_path, monkeypatch, cache, native):
    """Both stages with --precision auto and a timer that finds bf16 twice as fast: Stage 1 trains under
    autocast, Stage 2 with the LLM in bf16; each manifest records the choice and both timings; the
    finished Stage-2 run reads back in bf16 (on a CPU with native bf16) and its LoRA adapters are fp32."""
    from helpers.instruct_inputs import build_instruct_inputs
    from mlaga_fast.models import graph_llm
    from mlaga_fast.models.graph_llm import GraphLLM
    from mlaga_fast.runs.manifest import read_stage_manifest
    from mlaga_fast.train.instruct import train_instruct
    from mlaga_fast.train.instruct_config import InstructConfig
    from mlaga_fast.train.metrics import read_jsonl

    from mlaga_fast.train import align as align_mod

    timer, real_time_steps = Timer(2.0, 1.0), align_mod.time_steps

    def stage1_timer(steps, budget_s=0.0):  # Stage 1 times its real aligner: run that, report the fake times
        fp32_s, bf16_s = real_time_steps(steps, budget_s=0.0)
        assert fp32_s > 0 and bf16_s > 0
        return timer(None)

    monkeypatch.setattr(autotune, "measure_step_seconds", timer)  # Stage 2's synthetic step
    monkeypatch.setattr(align_mod, "time_steps", stage1_timer)
    torch.set_num_threads(1)
    root = build_instruct_inputs(tmp_path)  # its Stage 1 runs with --precision auto
    align = read_stage_manifest(root / "align")["precision"]
    assert (align["name"], align["weights"], align["autocast"]) == ("bf16", "float32", "bfloat16")
    assert (align["why"]["fp32_s"], align["why"]["bf16_s"], align["why"]["workload"]["trains"]) == (2.0, 1.0, True)
    assert align["why"]["workload"]["arch"] == "aligner-prenorm"

    cfg = InstructConfig(data=[str(root / "data")], align=str(root / "align"), llm=str(root / "llm"),
                         tasks=["nc"], warmup_examples=8, nc_per_dataset=8, batch_size=4, lora=True,
                         log_every=1, device="cpu", seed=0, precision="auto")
    train_instruct(cfg, tmp_path / "run", progress=False)
    assert timer.calls == 2  # one measurement per stage's workload
    man = read_stage_manifest(tmp_path / "run")
    prec = man["precision"]
    assert (prec["name"], prec["weights"], prec["autocast"]) == ("bf16", "bfloat16", None)
    why = prec["why"]
    assert (why["fp32_s"], why["bf16_s"], why["choice"], why["threshold"]) == (2.0, 1.0, "bf16", THRESHOLD)
    assert (why["workload"]["hidden"], why["workload"]["trains"]) == (64, False)  # the tiny Llama's width
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert losses and all(math.isfinite(x) for x in losses)
    monkeypatch.setattr(graph_llm, "cpu_has_native_bf16", lambda: True)
    gl = GraphLLM.from_run(tmp_path / "run", device="cpu", progress=False)
    assert gl.precision.weights == "bfloat16" and gl.precision.autocast is None
    dtypes = {("lora_" in n, p.dtype) for n, p in gl.model.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    monkeypatch.setattr(graph_llm, "cpu_has_native_bf16", lambda: False)  # read where bf16 is emulated: autocast
    gl = GraphLLM.from_run(tmp_path / "run", device="cpu", progress=False)
    assert (gl.precision.weights, gl.precision.autocast) == ("float32", "bfloat16")
    assert {p.dtype for p in gl.model.parameters()} == {torch.float32}


@pytest.mark.parametrize("value,message", [("fp16", "needs a CUDA device"), ("half", "is not one of")])
def test_bad_precision_on_cpu_is_one_line(value, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_precision(value, "cpu", frozen_weights=True)
    assert "\n" not in str(err.value)


def test_stage1_in_bf16_matches_fp32_losses_and_probe(tmp_path):
    """Stage 1 under bf16 autocast (fp32 master weights) against fp32, same seed and batches, on a homophilous
    400-node catalogue: every logged loss within the forward bound 2u(4L + 1) (the trajectories drift apart
    only by rounding), and the linear probe of the aligned vectors within 0.05 of fp32's (4 of the 80 test
    nodes; measured: 0.8875 vs 0.875 and 0.85 vs 0.85 at seeds 0 and 1), above the raw features' in both."""
    from mlaga_fast.data.synth import make_catalogue
    from mlaga_fast.eval.probe import probe_run
    from mlaga_fast.features import FeatureConfig, extract_features
    from mlaga_fast.features.extract import graph_fingerprint
    from mlaga_fast.train.align import train_align
    from mlaga_fast.train.align_config import AlignConfig
    from mlaga_fast.train.metrics import read_jsonl

    torch.set_num_threads(1)
    data = tmp_path / "data"
    g = make_catalogue(data, nodes=400, classes=4, homophily=0.9, image_mismatch=0.1, text_mismatch=0.05, seed=0,
                       image_size=32, mean_degree=6.0)
    extract_features(g, data / "features", FeatureConfig(encoder="tiny", device="cpu", batch_size=128),
                     graph_fp=graph_fingerprint(g, data), progress=False)
    layers, out = 2, {}
    for prec in ("fp32", "bf16"):
        run = tmp_path / prec
        train_align(AlignConfig(dim=32, num_layers=layers, num_heads=2, num_queries=2, batch_size=64, max_steps=40,
                                warmup_steps=4, lr=3e-3, log_every=5, device="cpu", precision=prec, seed=0),
                    data, data / "features", run, show_progress=False)
        out[prec] = ([r["loss"] for r in read_jsonl(run / "metrics.jsonl")], probe_run(run, device="cpu", progress=False))
    (l32, p32), (l16, p16) = out["fp32"], out["bf16"]
    assert len(l32) == len(l16) == 8
    rel = [abs(a - b) / abs(a) for a, b in zip(l32, l16)]
    assert max(rel) <= 2 * U * (4 * layers + 1) and max(rel) > 0  # bf16 did compute, and stayed close
    assert abs(p16["aligned"]["test"] - p32["aligned"]["test"]) <= 0.05
    for p in (p32, p16):
        assert p["aligned"]["test"] > p["raw"]["test"]


def _attention_f64(q, k, v, mask):
    """softmax(q k^T / sqrt(d), masked) v in float64: the reference for the bf16 attention backends."""
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v.double()


def test_bf16_on_cpu_trains_attention_through_the_math_backend():
    """Precision.context computing in bf16 on a CPU (frozen weights in bf16, or autocast): where gradients
    are taken, attention runs through the math backend (torch's fused CPU kernel's bf16 backward ran at
    0.54x of fp32); without gradients the fused kernel stays, and fp32 or CUDA leave the backends alone.
    Output and gradients agree with a float64 loop of the formula within bf16's rounding."""
    import torch.nn.functional as F

    flash = torch.backends.cuda.flash_sdp_enabled  # the global backend switch sdpa_kernel sets (CPU included)
    bf16 = Precision("bf16", "bfloat16", None)
    for p in (bf16, Precision("bf16", "float32", "bfloat16")):
        with p.context("cpu"):
            assert not flash() and torch.backends.cuda.math_sdp_enabled()
        with torch.no_grad(), p.context("cpu"):
            assert flash()
    with Precision("fp32", "float32", None).context("cpu"):
        assert flash()
    with Precision("bf16", "bfloat16", None).context("cuda"):
        assert flash()
    assert flash()  # restored on exit

    g = torch.Generator().manual_seed(0)
    B, H, L, D = 2, 3, 12, 16
    q, k, v = (torch.randn(B, H, L, D, generator=g).bfloat16().requires_grad_(True) for _ in range(3))
    mask = torch.ones(L, L, dtype=torch.bool).tril()[None, None].repeat(B, 1, 1, 1)
    mask[0, :, :, 9:] = False  # a padded prompt: its last 3 keys masked
    mask[0, :, 9:, :] = True  # (padded query rows see every key, as transformers does)
    up = torch.randn(B, H, L, D, generator=g)
    with bf16.context("cpu"):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    (out.float() * up).sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    ref = _attention_f64(q64, k64, v64, mask)
    (ref * up.double()).sum().backward()
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), ref, atol=4 * U, rtol=4 * U)  # one bf16 rounding of an fp32 result
    for t, r in ((q, q64), (k, k64), (v, v64)):  # gradients: fp32 inside, rounded to bf16 once
        err = (t.grad.double() - r.grad).abs().max() / r.grad.abs().max()
        assert err < 8 * U, err
