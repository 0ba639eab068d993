"""Stage 2's model: a frozen causal LLM read through trained projectors, with optional LoRA adapters.

One object, three readings of one forward pass, used by every caller:

- ``loss(batch)``: the answer-only cross-entropy that training (``mlaga_fast.train.instruct_stage``) minimises;
- ``score(batch, candidates)``: constrained log-likelihoods of the candidate answers (evaluation, ``predict``);
- ``generate(batch)``: free answers (``ask``, the paper protocol); ``read`` gives both from one forward.

A batch (``mlaga_fast.prompts.batch.collate``) carries the node inputs its placeholders read; ``embed``
projects them (the projectors' outputs, with gradient) and splices them into the prompt's embeddings
(``mlaga_fast.llm.splice``); the LLM runs with the batch's shared prefix once (``mlaga_fast.llm.forward``).

Constrained scoring: the prompt batch runs once (its shared prefix once, ``mlaga_fast.llm.forward``)
with a KV cache. The candidate answers (each ending with the end token) form a trie; a candidate's
score is the sum of log p(token | prompt, earlier tokens) over its *branch points*, the positions where
candidates that agree so far continue differently. Tokens after a candidate is the only one left are
forced and add nothing, so they need no forward pass: for class names with distinct first tokens the
score is log p(first token), read from the prompt's own last logits. Shared prefixes (e.g. "Dolls" and
"Dolls & Accessories", split by the end token) run once per prompt, grouped by length. The argmax is
always a valid class: this way of reading the LLM can never fail to parse.

Generation: decoding from the same prompt cache, up to the longest answer + 2 tokens (or
``max_new_tokens``), stopped at the end token; greedy at temperature 0, else sampled from
softmax(logits / T) with a seeded generator.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mlaga_fast.llm.forward import LLMParts, PrefixKV, forward_hidden, logits_at_end
from mlaga_fast.llm.loading import LLMOptions, load_llm, quiet_peft
from mlaga_fast.llm.splice import IGNORE_INDEX, splice_node_embeds
from mlaga_fast.models.projector import Projectors, load_projectors, projector_config, save_projectors
from mlaga_fast.prompts.answers import branch_points
from mlaga_fast.prompts.batch import Batch
from mlaga_fast.runs.open import OpenedRun, open_run
from mlaga_fast.runtime.precision import Precision

__all__ = ["GraphLLM", "bf16_agreement"]


class GraphLLM:
    """The frozen LLM (``model``, peft-wrapped under LoRA), its tokenizer, the projectors, and the precision
    every forward runs in. Only the projectors and the LoRA adapters train."""

    def __init__(self, model: Any, tokenizer: Any, projectors: Projectors, precision: Precision, device: Any):
        self.model, self.tokenizer, self.projectors = model, tokenizer, projectors
        self.precision, self.device = precision, torch.device(device)
        self.parts = LLMParts(model)
        self.prefix = PrefixKV(self.parts)
        self.lora = [p for p in model.parameters() if p.requires_grad]  # [] without LoRA

    # --- building and loading ------------------------------------------------------------------------
    @classmethod
    def build(cls, llm: str, options: LLMOptions, precision: Precision, settings: Mapping[str, Any], *,
              graph_dim: int, image_dim: int) -> tuple["GraphLLM", Any]:
        """A new model for training: the LLM (with fresh LoRA adapters when ``options.lora``) and projectors
        initialised from the torch seed. Returns (model, the LLM's spec)."""
        model, tok, spec = load_llm(llm, options)
        if options.gradient_checkpointing:
            model.train()  # HF only checkpoints in training mode; Llama-family dropouts are 0
        hidden = int(model.get_input_embeddings().weight.shape[1])
        proj = Projectors(projector_config(settings, graph_dim, hidden, image_dim)).to(options.device)
        return cls(model, tok, proj, precision, options.device), spec

    @classmethod
    def from_run(cls, run: OpenedRun | str | Path, *, device: Any, llm: tuple | None = None,
                 progress: bool = True, verify: bool = True) -> "GraphLLM":
        """The model of a finished Stage-2 run (or an export): ``run`` is a folder, opened here with
        ``mlaga_fast.runs.open.open_run`` (``verify=False`` skips the checksums), or a run already opened.
        The projector file is checked against the manifest's projector config and the LLM's hidden size
        against its dims. ``llm``: an already loaded (model, tokenizer) of the same LLM (not for LoRA runs,
        whose adapters would change it)."""
        if not isinstance(run, OpenedRun):
            run = open_run(run, "instruct", verify=verify)
        run_dir, manifest, device = run.path, run.manifest, torch.device(device)
        cfg = manifest["config"]
        prec = Precision(**manifest["precision"])
        if device.type != "cuda" and prec.weights != "float32":  # a GPU run read on a CPU: autocast instead
            prec = Precision(prec.name, "float32", prec.weights)
        # The projectors first: a damaged file is refused before the LLM is loaded.
        proj = load_projectors(run_dir / "projectors.safetensors", expected=manifest["projector"])
        if llm is not None and not cfg.get("lora"):
            model, tok = llm
        else:
            model, tok, _ = load_llm(cfg["llm"], LLMOptions(dtype=prec.weights, device=str(device),
                                                           flash_attn=cfg["flash_attn"], progress=progress))
        hidden = int(model.get_input_embeddings().weight.shape[1])
        if hidden != manifest["dims"]["hidden"]:
            raise ValueError(f"llm {cfg['llm']}: hidden size {hidden}, but the run was trained with "
                             f"{manifest['dims']['hidden']}")
        if cfg.get("lora"):
            from peft import PeftModel

            try:
                with quiet_peft():
                    model = PeftModel.from_pretrained(model, str(run_dir / "lora"))
            except (KeyError, TypeError, RuntimeError) as e:  # shapes or names that do not fit this LLM
                raise ValueError(f"{run_dir / 'lora'}: the LoRA adapter does not fit {cfg['llm']} "
                                 f"({' '.join(str(e).split())[:300]})") from None
            model.eval()
        return cls(model, tok, proj.to(device).eval(), prec, device)

    def save(self, out: str | Path) -> None:
        """OUT/projectors.safetensors and, under LoRA, OUT/lora/ (a peft adapter folder)."""
        save_projectors(self.projectors, Path(out) / "projectors.safetensors")
        if self.lora:
            self.model.save_pretrained(Path(out) / "lora")

    # --- what trains ----------------------------------------------------------------------------------
    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.projectors.parameters()) + self.lora

    def set_lora_trainable(self, on: bool) -> None:
        for p in self.lora:
            p.requires_grad_(on)
        self.parts.trainable = on and bool(self.lora)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable state: ``projectors.*`` and ``lora.*`` (by the peft model's parameter names)."""
        state = {f"projectors.{k}": v for k, v in self.projectors.state_dict().items()}
        lora = {id(p) for p in self.lora}
        state.update({f"lora.{k}": p.detach() for k, p in self.model.named_parameters() if id(p) in lora})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.projectors.load_state_dict({k[len("projectors."):]: v for k, v in state.items()
                                         if k.startswith("projectors.")})
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            for k, v in state.items():
                if k.startswith("lora."):
                    named[k[len("lora."):]].copy_(v)
        self.prefix.clear()  # memoised prefixes were computed with the old adapters

    # --- the forward ----------------------------------------------------------------------------------
    def embed(self, batch: Batch) -> torch.Tensor:
        """inputs_embeds [B, T, H] of the batch's rows with projected node tokens spliced in (gradient flows
        to the projectors)."""
        dev = self.device
        graph = self.projectors.graph(batch.graph.to(dev), batch.task) if batch.graph is not None else None
        image = self.projectors.image(batch.image.to(dev)) if batch.image is not None else None
        # Slots inside the shared prefix cannot exist (the prefix stops at the first placeholder).
        return splice_node_embeds(self.parts.embed, batch.input_ids.to(dev), graph, image)

    def loss(self, batch: Batch, *, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy over answer tokens only: their mean, or their sum with reduction="sum" (the trainer
        sums, so that several processes can divide by the answer-token count of all of them)."""
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: {reduction!r} is not one of ['mean', 'sum']")
        if batch.labels is None:
            raise ValueError("loss: the batch has no answer tokens (collate with with_answer=True)")
        with self.precision.context(self.device.type):
            embeds = self.embed(batch)
            hidden, _ = forward_hidden(self.parts, embeds, batch.mask.to(self.device), batch.prefix, self.prefix)
            logits = logits_at_end(self.parts, hidden, batch.keep)  # [B, keep, V] float32
        target = batch.labels.to(self.device)  # [B, keep]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=IGNORE_INDEX, reduction=reduction)

    @torch.inference_mode()
    def read(self, batch: Batch, candidates: Sequence[Sequence[int]] | None = None, *, generate: bool = False,
             max_new_tokens: int | None = None, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, list[list[int]] | None]:
        """(scores [B, C] float32 CPU, or None without candidates; generated token lists, or None) from one
        forward over the prompts (collated with with_answer=False)."""
        dev = self.device
        eos_id = self.tokenizer.eos_token_id
        with self.precision.context(dev.type):
            mask = batch.mask.to(dev)  # [B, T]
            hidden, cache = forward_hidden(self.parts, self.embed(batch), mask, batch.prefix, self.prefix,
                                           use_cache=True)
            first = torch.log_softmax(logits_at_end(self.parts, hidden, 1)[:, 0], dim=-1)  # [B, V]
            P = len(batch.prefix)
            full_mask = torch.cat([torch.ones(mask.shape[0], P, dtype=mask.dtype, device=dev), mask], dim=1)
            plen = P + mask.sum(1)  # [B] positions of the first answer token
            gen = None
            if generate:
                steps = max_new_tokens or (max(len(c) for c in candidates) + 2 if candidates else 32)
                gen = _decode(self.parts, copy.deepcopy(cache) if candidates else cache, first, full_mask, plen,
                              eos_id, steps, temperature, generator)
            if not candidates:
                return None, gen
            scores = _candidate_scores(self.parts, cache, first, full_mask, plen, candidates, dev)
        return scores.float().cpu(), gen

    def score(self, batch: Batch, candidates: Sequence[Sequence[int]]) -> torch.Tensor:
        """[B, C] constrained log-likelihoods of the candidate answers (each ending with the end token)."""
        return self.read(batch, candidates)[0]

    def generate(self, batch: Batch, *, max_new_tokens: int = 32, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> list[list[int]]:
        """Generated token ids per prompt, up to the end token or ``max_new_tokens``; greedy at temperature 0."""
        return self.read(batch, generate=True, max_new_tokens=max_new_tokens, temperature=temperature,
                         generator=generator)[1]


def bf16_agreement(model: GraphLLM, batch: Batch) -> dict:
    """The answer loss and the projectors' gradients on one batch in fp32 and under bf16 autocast:
    {"loss_fp32", "loss_bf16", "loss_rel_diff", "grad_cosine"} (the check --precision bf16 is held to)."""
    out, kept = {}, model.precision
    try:
        for name, prec in (("fp32", Precision("fp32", "float32", None)),
                           ("bf16", Precision("bf16", "float32", "bfloat16"))):
            model.projectors.zero_grad()
            model.precision = prec
            loss = model.loss(batch)
            loss.backward()
            out[name] = (loss.item(), torch.cat([p.grad.flatten() for p in model.projectors.parameters()
                                                 if p.grad is not None]))
    finally:
        model.precision = kept
    (l32, g32), (l16, g16) = out["fp32"], out["bf16"]
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
            "grad_cosine": torch.nn.functional.cosine_similarity(g16, g32, dim=0).item()}


def _candidate_scores(parts, cache, first: torch.Tensor, mask: torch.Tensor, plen: torch.Tensor,
                      candidates: Sequence[Sequence[int]], device) -> torch.Tensor:
    """[B, C]: for each candidate, the summed log-probs of its tokens at its branch points (see
    ``branch_points``); tokens no other candidate competes with add nothing. Branch points after the
    first token need the shared prefix run once per prompt (grouped by length, cache repeated)."""
    B, C = first.shape[0], len(candidates)
    points = branch_points(candidates)
    scores = torch.zeros(B, C, dtype=first.dtype, device=device)
    needed: dict[tuple[int, ...], list[tuple[int, int]]] = {}  # prefix -> [(candidate, its next token)]
    for i, (c, pts) in enumerate(zip(candidates, points)):
        for j in pts:
            if j == 0:
                scores[:, i] += first[:, c[0]]
            else:
                needed.setdefault(tuple(c[:j]), []).append((i, c[j]))
    by_len: dict[int, list[tuple[int, ...]]] = {}
    for pre in needed:
        by_len.setdefault(len(pre), []).append(pre)
    for L, pres in sorted(by_len.items()):
        n = len(pres)
        group = copy.deepcopy(cache)
        group.batch_repeat_interleave(n)  # row b*n + k continues prompt b with prefix pres[k]
        rows = torch.tensor(pres, dtype=torch.long, device=device).repeat(B, 1)  # [B*n, L]
        att = torch.cat([mask.repeat_interleave(n, 0), torch.ones(B * n, L, dtype=mask.dtype, device=device)], 1)
        pos = plen.repeat_interleave(n)[:, None] + torch.arange(L, device=device)[None]  # [B*n, L]
        out = parts.decoder(inputs_embeds=parts.embed(rows), attention_mask=att, position_ids=pos,
                            use_cache=True, **{parts.cache_kw: group})
        lp = torch.log_softmax(logits_at_end(parts, out.last_hidden_state, 1)[:, 0], dim=-1).view(B, n, -1)
        for k, pre in enumerate(pres):
            for i, tok in needed[pre]:
                scores[:, i] += lp[:, k, tok]
    return scores


def _decode(parts, cache, first_logp: torch.Tensor, mask: torch.Tensor, plen: torch.Tensor, eos_id: int,
            steps: int, temperature: float, generator: torch.Generator | None) -> list[list[int]]:
    B = first_logp.shape[0]
    device = first_logp.device

    def pick(logp: torch.Tensor) -> torch.Tensor:  # [B, V] -> [B]
        if temperature <= 0:
            return logp.argmax(-1)
        probs = torch.softmax(logp.float() / temperature, dim=-1)
        return torch.multinomial(probs.cpu(), 1, generator=generator).view(-1).to(device)

    nxt = pick(first_logp)
    outs: list[list[int]] = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=device)
    att = mask
    for s in range(steps):
        for b in range(B):
            if not done[b]:
                outs[b].append(int(nxt[b]))
        done |= nxt == eos_id
        if bool(done.all()) or s == steps - 1:
            break
        att = torch.cat([att, torch.ones((B, 1), dtype=att.dtype, device=device)], dim=1)
        out = parts.decoder(inputs_embeds=parts.embed(nxt[:, None]), attention_mask=att,
                            position_ids=(plen + s)[:, None], use_cache=True, **{parts.cache_kw: cache})
        nxt = pick(torch.log_softmax(logits_at_end(parts, out.last_hidden_state, 1)[:, 0], dim=-1))
    return outs
