"""--precision: what each setting resolves to on CPU (auto is fp32 on every CPU: bf16 autocast measured
slower there, AMX or not; mlaga_fast/runtime/precision.py) and the one-line errors."""
import pytest
import torch

from mlaga_fast.runtime.precision import Precision, resolve_precision


@pytest.mark.parametrize("frozen", [True, False])
def test_auto_is_fp32_on_cpu_and_bf16_is_autocast(frozen):
    assert resolve_precision("auto", "cpu", frozen_weights=frozen) == Precision("fp32", "float32", None)
    assert resolve_precision("fp32", "cpu", frozen_weights=frozen) == Precision("fp32", "float32", None)
    # on CPU bf16 keeps fp32 weights and autocasts the ops: a matmul under its context computes in bf16
    bf16 = resolve_precision("bf16", "cpu", frozen_weights=frozen)
    assert bf16 == Precision("bf16", "float32", "bfloat16")
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with bf16.context("cpu"):
        out = a @ b
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), a @ b, rtol=2e-2, atol=2e-2)
    with resolve_precision("auto", "cpu", frozen_weights=frozen).context("cpu"):
        assert (a @ b).dtype == torch.float32


@pytest.mark.parametrize("value,message", [("fp16", "needs a CUDA device"), ("half", "is not one of")])
def test_bad_precision_on_cpu_is_one_line(value, message):
    with pytest.raises(ValueError, match=message) as err:
        resolve_precision(value, "cpu", frozen_weights=True)
    assert "\n" not in str(err.value)
