"""Stage 2 with the LLM families people run today: Llama 3, Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3, Phi-3
and SmolLM2.

Each family is a tiny random model with the family's own architecture, special tokens and chat template
(tests/helpers/llm_families.py). For each one:

- the answer tokens sit where the family's chat template puts an assistant's answer (the template's own
  rendering of a user + assistant exchange is the reference), and end with the template's turn-end token;
- the labels of a collated batch are the answer tokens and nothing else;
- the shared-prefix KV cache gives the logits of a plain full forward of the model over [prefix | row]
  (its own embedding, mask, cache and logit post-processing), for left-padded rows longer than the
  sliding window of the families that have one, and so does one more step from the returned cache (how
  scoring and generation continue);
- (slow) warm-up + instruct with LoRA, eval (constrained and the paper protocol), predict and ask run
  through the CLI.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.llm_families import FAMILIES, build_family_llm  # noqa: E402

NAMES = list(FAMILIES)
CLASSES = ["Board Games", "Dolls", "Puzzles"]
TEXTS = ["a wooden chess set with folding board", "a soft rag doll", "a jigsaw of one thousand pieces",
         "dice", "a large plush bear with a ribbon and a very long description of it", "cards"]


@pytest.fixture(scope="module")
def llm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: build_family_llm(f, root / f, base_dir=root / "base") for f in NAMES}


def _tokenizer(folder):
    from mlaga_fast.llm.loading import load_tokenizer, resolve_llm

    return load_tokenizer(resolve_llm(str(folder)))


def _builder(tok, *, chat=True, nq=2, texts=8):
    from mlaga_fast.prompts.builder import PromptBuilder, TruncationPolicy

    return PromptBuilder(tok, nq, TEXTS, CLASSES, TruncationPolicy(256, texts, texts), chat=chat)


# -- template placement -----------------------------------------------------------------------------
@pytest.mark.parametrize("family", NAMES)
def test_answer_follows_the_families_assistant_header(llm_dirs, family):
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID

    fam = FAMILIES[family]
    tok = _tokenizer(llm_dirs[family])
    b = _builder(tok)

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids

    for ex, answer in ((b.nc(0, [1, 2], [0, 1], label=2), "Puzzles"), (b.lp(3, 4, None, label=1), "Yes")):
        msg = "Which one?"  # any user message: the reference is the template's own rendering around it
        ask = tok.apply_chat_template([{"role": "user", "content": msg}], tokenize=False, add_generation_prompt=True,
                                      enable_thinking=False)
        full = tok.apply_chat_template([{"role": "user", "content": msg}, {"role": "assistant", "content": answer}],
                                       tokenize=False)
        assert full.startswith(ask), (ask, full)
        head, header = ask.split(msg)
        after = full[len(ask):]
        answer_text = after[: after.index(fam.turn_end) + len(fam.turn_end)]  # the answer and the turn's end
        assert ex.prompt_ids[:len(ids(head))] == ids(head)
        assert ex.prompt_ids[-len(ids(header)):] == ids(header), family  # the assistant header closes the prompt
        assert ex.answer_ids == ids(answer_text), (family, tok.convert_ids_to_tokens(ex.answer_ids), answer_text)
        assert ex.answer_ids[-1] == tok.convert_tokens_to_ids(fam.turn_end) == tok.eos_token_id
        # Mistral's answer follows "[/INST]" after a space; the others start on the header's new line
        assert tok.convert_ids_to_tokens(ex.answer_ids[0]).startswith("Ġ") == (family == "mistral")
        assert GRAPH_TOKEN_ID in ex.prompt_ids  # the node tokens are inside the user's message


@pytest.mark.parametrize("family", ["llama3", "gemma2"])
def test_without_chat_template_the_tokenizers_bos_opens_the_prompt(llm_dirs, family):
    tok = _tokenizer(llm_dirs[family])
    ex = _builder(tok, chat=False).nc(0, [], [], label=0)
    assert ex.prompt_ids[0] == tok.bos_token_id and ex.prompt_ids.count(tok.bos_token_id) == 1
    assert ex.answer_ids == tok(" Board Games", add_special_tokens=False).input_ids + [tok.eos_token_id]


def test_a_chat_template_that_refuses_a_lone_user_turn_is_a_one_line_error(llm_dirs):
    tok = _tokenizer(llm_dirs["llama3"])
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}"
                         "{{ raise_exception('a system turn must come first') }}{% endif %}"
                         "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(ValueError, match=r"^llm: the tokenizer's chat template refuses a conversation of one user "
                                         r"turn \(a system turn must come first\); use --chat-template none"):
        _builder(tok)
    _builder(tok, chat=False)  # without the chat template the same tokenizer works


# -- labels -------------------------------------------------------------------------------------------
def _examples(b):
    return [b.nc(0, [1, 2], [0, 1], label=2), b.nc(4, [], [], label=0), b.nc(5, [3], [2], label=1),
            b.nc(3, [0, 1, 2], [0, 1, 2], label=0)]


@pytest.mark.parametrize("family", NAMES)
def test_labels_cover_only_the_answer(llm_dirs, family):
    from mlaga_fast.llm.splice import IGNORE_INDEX
    from mlaga_fast.prompts.batch import collate

    tok = _tokenizer(llm_dirs[family])
    exs = _examples(_builder(tok))
    batch = collate(exs, tok.pad_token_id, with_answer=True)
    T = batch.input_ids.shape[1]
    for i, ex in enumerate(exs):
        row = batch.prefix + batch.input_ids[i][batch.mask[i].bool()].tolist()
        assert row == ex.prompt_ids + ex.answer_ids[:-1]  # the model reads the prompt and the answer but its last
        seq = ex.prompt_ids + ex.answer_ids
        for j, lab in enumerate(batch.labels[i].tolist()):  # label j: the target after column T - keep + j
            t = len(batch.prefix) + T - batch.keep + j - (T - int(batch.mask[i].sum()))  # index in seq of the input
            if lab == IGNORE_INDEX:
                assert t + 1 < len(ex.prompt_ids)
            else:
                assert t + 1 >= len(ex.prompt_ids) and lab == seq[t + 1]
        assert [v for v in batch.labels[i].tolist() if v != IGNORE_INDEX] == ex.answer_ids


# -- the shared-prefix KV cache -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(llm_dirs):
    from mlaga_fast.llm import load_llm

    out = {}

    def get(family):
        if family not in out:
            model, tok, _ = load_llm(str(llm_dirs[family]))
            out[family] = (model, tok)
        return out[family]

    return get


# The prefix-as-input path (models whose cache cannot be prefilled) is forced on one plain and one
# hybrid sliding-window family.
PREFILL_CASES = [(f, True) for f in NAMES] + [("llama3", False), ("gemma2", False)]


@pytest.mark.parametrize("family,prefill", PREFILL_CASES,
                         ids=[f"{f}-prefix-{'cache' if p else 'as-input'}" for f, p in PREFILL_CASES])
def test_prefix_cache_equals_a_full_forward(loaded, family, prefill):
    import torch

    from mlaga_fast.llm.forward import LLMParts, PrefixKV, forward_hidden, logits_at_end
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, splice_node_embeds
    from mlaga_fast.prompts.batch import collate

    model, tok = loaded(family)
    parts = LLMParts(model)
    parts.prefix_cache = prefill
    exs = _examples(_builder(tok))
    batch = collate(exs, tok.pad_token_id, with_answer=True)
    P, (B, T) = len(batch.prefix), batch.input_ids.shape
    window = FAMILIES[family].sliding_window
    assert P > 0 and not bool(batch.mask.all())  # a shared prefix and padded rows
    if window:
        assert P > window  # the prefix alone is longer than the window: a cache trimmed to it would be short
        assert P + T > window  # and padding would shift a window counted in columns
    g = torch.Generator().manual_seed(1)
    k = int((batch.input_ids == GRAPH_TOKEN_ID).sum()) // 2
    nodes = torch.randn(k, 2, parts.hidden, generator=g)  # [K, nq, H] stands for projected node tokens
    with torch.no_grad():
        embeds = splice_node_embeds(parts.embed, batch.input_ids, nodes)  # [B, T, H]
        hidden, cache = forward_hidden(parts, embeds, batch.mask, batch.prefix, PrefixKV(parts), use_cache=True)
        got = logits_at_end(parts, hidden, batch.keep)  # [B, keep, V]
        # one more step from the returned cache, as scoring and generation do
        nxt = torch.tensor([[ex.answer_ids[-1]] for ex in exs])  # [B, 1]
        att = torch.cat([torch.ones(B, P, dtype=torch.long), batch.mask, torch.ones(B, 1, dtype=torch.long)], 1)
        plen = P + batch.mask.sum(1)
        out = parts.decoder(inputs_embeds=parts.embed(nxt), attention_mask=att, position_ids=plen[:, None],
                            use_cache=True, **{parts.cache_kw: cache})
        step = logits_at_end(parts, out.last_hidden_state, 1)[:, 0]  # [B, V]

        pre = parts.embed(torch.tensor([batch.prefix]))[0]  # [P, H]
        for i in range(B):
            real = batch.mask[i].bool()
            row = torch.cat([pre, embeds[i][real], parts.embed(nxt[i])])[None]  # [1, P + L + 1, H], no padding
            ref = model(inputs_embeds=row).logits[0].float()  # the model's own forward
            n = int(real.sum())
            torch.testing.assert_close(got[i, batch.keep - min(n, batch.keep):], ref[-1 - min(n, batch.keep):-1],
                                       atol=2e-5, rtol=1e-4, msg=f"{family} row {i}")
            torch.testing.assert_close(step[i], ref[-1], atol=2e-5, rtol=1e-4, msg=f"{family} row {i} next step")


@pytest.mark.parametrize("family,attn", [(f, None) for f in NAMES] + [("llama3", "eager")],
                         ids=[f"{f}-{a or 'default'}" for f, a in [(f, None) for f in NAMES] + [("llama3", "eager")]])
def test_packed_prefix_equals_two_decoder_calls_with_gradients(llm_dirs, family, attn):
    """Training under LoRA packs the prefix with the rows into one decoder call (mlaga_fast.llm.forward, item 1).
    Reference: the same forward_hidden with packing off (the prefix's keys and values, then the rows): hidden
    states, the inputs' gradient and every LoRA gradient agree. Sliding-window families never pack."""
    import torch

    from mlaga_fast.llm import load_llm
    from mlaga_fast.llm.forward import LLMParts, PrefixKV, forward_hidden, logits_at_end
    from mlaga_fast.llm.loading import LLMOptions
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, splice_node_embeds
    from mlaga_fast.prompts.batch import collate

    model, tok, _ = load_llm(str(llm_dirs[family]), LLMOptions(lora=True, progress=False))
    if attn:
        model.config._attn_implementation = attn
    lora = [p for p in model.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in lora:  # peft starts one factor at zero: give the adapters a path through every layer
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    parts = LLMParts(model)
    packs = FAMILIES[family].sliding_window is None
    assert parts.trainable and parts.packed_prefix == packs
    exs = _examples(_builder(tok))
    batch = collate(exs, tok.pad_token_id, with_answer=True)
    k = int((batch.input_ids == GRAPH_TOKEN_ID).sum()) // 2
    nodes = torch.randn(k, 2, parts.hidden, generator=g)  # [K, nq, H]
    with torch.no_grad():
        embeds = splice_node_embeds(parts.embed, batch.input_ids, nodes)  # [B, T, H]
    got = {}
    for packed in (True, False):
        parts.packed_prefix = packed and packs
        e = embeds.clone().requires_grad_()
        for p in lora:
            p.grad = None
        hidden, _ = forward_hidden(parts, e, batch.mask, batch.prefix, PrefixKV(parts))
        logits_at_end(parts, hidden, batch.keep).logsumexp(-1).mean().backward()
        assert parts.packed_prefix == (packed and packs)  # packing was not dropped on the way
        real = batch.mask.bool()
        got[packed] = [hidden[real].detach(), e.grad] + [p.grad for p in lora]
    for name, a, b in zip(["hidden", "input grad"] + [f"lora {i}" for i in range(len(lora))], got[True], got[False]):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=f"{family} {name}")
    if family == "llama3" and attn is None:  # checkpointing re-runs layers in the backward: never packed
        ckpt, _, _ = load_llm(str(llm_dirs[family]), LLMOptions(lora=True, gradient_checkpointing=True,
                                                                progress=False))
        assert not LLMParts(ckpt).packed_prefix


def test_gemma_scales_text_embeddings_and_splices_node_tokens_as_given(loaded):
    """Gemma multiplies its token embeddings by sqrt(hidden) inside the embedding module: text positions
    get that scale through LLMParts.embed, and node tokens are the projectors' outputs, placed unchanged
    (the model never rescales inputs_embeds), in training, scoring and generation alike."""
    import torch

    from mlaga_fast.llm.forward import LLMParts
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, splice_node_embeds

    model, _ = loaded("gemma2")
    parts = LLMParts(model)
    ids = torch.tensor([[5, GRAPH_TOKEN_ID, GRAPH_TOKEN_ID, 7]])
    node = torch.randn(1, 2, parts.hidden)
    x = splice_node_embeds(parts.embed, ids, node)
    scale = parts.hidden ** 0.5
    torch.testing.assert_close(x[0, [0, 3]], parts.embed.weight[[5, 7]] * scale)
    torch.testing.assert_close(x[0, 1:3], node[0])


def test_lora_targets_fused_projections_and_refuses_unknown_layers(loaded):
    from mlaga_fast.llm.loading import lora_targets

    phi3, _ = loaded("phi3")
    llama, _ = loaded("llama3")
    assert lora_targets(phi3, ["q_proj", "v_proj"]) == ["qkv_proj"]
    assert lora_targets(llama, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match=r"^lora: none of the target layers \['wq'\] exists in LlamaForCausalLM"):
        lora_targets(llama, ["wq"])


# -- the CLI, end to end ---------------------------------------------------------------------------------
def _cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def stage2_inputs(tmp_path_factory):
    from helpers.instruct_inputs import build_instruct_inputs

    return build_instruct_inputs(tmp_path_factory.mktemp("stage2"))


@pytest.mark.slow
@pytest.mark.parametrize("family", NAMES)
def test_stage2_eval_predict_and_ask_run_through_the_cli(llm_dirs, stage2_inputs, family, tmp_path, one_torch_thread):
    root, run = stage2_inputs, tmp_path / "run"
    data = root / "data"
    r = _cli(["train", "instruct", "--data", data, "--align", root / "align", "--llm", llm_dirs[family],
              "--tasks", "nc,lp", "--chat-template", "auto", "--lora", "--warmup-examples", 8, "--max-steps", 2,
              "--batch-size", 4, "--nc-per-dataset", 8, "--target-text-tokens", 8, "--demo-text-tokens", 4,
              "--device", "cpu", "--out", run, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "(2 warm-up)" in r.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses and all(0 < v < 20 for v in losses)  # a cross-entropy over ~49k tokens starts near ln(V) = 10.8
    lora = json.loads((run / "lora" / "adapter_config.json").read_text())
    assert set(lora["target_modules"]) == ({"qkv_proj"} if family == "phi3" else {"q_proj", "v_proj"})

    for task, extra in (("nc", ["--generate"]), ("lp", ["--protocol", "paper"])):
        r = _cli(["eval", "--run", run, "--data", data, "--task", task, "--max-examples", 6, "--device", "cpu",
                  "--no-progress", *extra])
        assert r.exit_code == 0, r.output
        res = json.loads(r.output.strip().splitlines()[-1])
        assert res["num_examples"] == 6 and 0 <= res["accuracy"] <= 1
    out = tmp_path / "pred.csv"
    r = _cli(["predict", "--run", run, "--data", data, "--task", "lp", "--device", "cpu", "--no-progress",
              "--out", out])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["rows"] > 0
    r = _cli(["ask", "--run", run, "--data", data, "--node", 3, "--device", "cpu", "--max-new-tokens", 4,
              "What is this item?"])
    assert r.exit_code == 0, r.output  # the answer itself is a random model's: possibly empty
