"""A trained MLaGA (a finished Stage-2 run) as a Python object: load it, score, predict, ask.

    from mlaga_fast import MLaGA
    m = MLaGA.from_pretrained("runs/instruct")
    pred = m.predict_nc("data/toys", [0, 1, 2])           # classes and per-class scores
    p_yes = m.predict_lp("data/toys", [[0, 5], [1, 9]])   # P(Yes) per pair
    print(m.ask("data/toys", 0, "What is this product?"))

A dataset is a directory written by ``mlaga_fast.data.save`` with its features (``DIR/features`` or
``features=``); it may be one the run never saw (transfer) as long as its features have the encoder
and dims the run expects. Everything the run recorded is checked before use: the projector file
against the manifest's projector config, the template set against its fingerprint, the LLM's hidden
size, the features against the aligner run.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mlaga_fast.features.source import features_arg
from mlaga_fast.models.graph_llm import GraphLLM
from mlaga_fast.models.node_inputs import DatasetInputs, demo_cache_dir, load_dataset_inputs
from mlaga_fast.prompts.answers import answer_text
from mlaga_fast.prompts.batch import NodeInputs, collate
from mlaga_fast.prompts.demos import DEMO_MODES, LinkPairs, NCDemos, ppr_demo_table
from mlaga_fast.prompts.builder import load_templates
from mlaga_fast.prompts.examples import (asked_lp_examples, asked_nc_examples, builder_for, cycle_wordings,
                                         description_examples, lp_examples, nc_examples, templates_fingerprint)
from mlaga_fast.runs.manifest import bundled_aligner
from mlaga_fast.runs.open import open_run
from mlaga_fast.runtime.device import pick_device
from mlaga_fast.utils.progress import progress as bar_of

__all__ = ["MLaGA", "Prediction", "NO_FREE_ANSWER"]

# marks an ``ask`` answer that is the run's constrained reading because the LLM ended its own answer at once
NO_FREE_ANSWER = "no free answer to this wording"


@dataclass
class Prediction:
    """NC: ``labels`` [n] class indices and ``scores`` [n, C] log-likelihoods (``class_names`` gives the
    names); LP: ``labels`` [n] (1 = Yes) and ``scores`` [n, 2] log-likelihoods of No / Yes, with
    ``p_yes`` [n] = P(Yes | Yes or No)."""
    labels: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    p_yes: np.ndarray | None = None


class MLaGA:
    """A finished Stage-2 run: its model (``GraphLLM``: the frozen LLM, LoRA, projectors) and the prompt
    settings it was trained with, applied to any dataset with compatible features."""

    def __init__(self, run_dir: Path, manifest: dict, model: GraphLLM):
        self.run_dir, self.manifest = Path(run_dir), manifest
        self.config: dict = manifest["config"]
        self.model = model
        self.integrity = "verified"  # how the run's files were checked (runs.open.OpenedRun.integrity)
        self._data: dict[tuple[str, str | None], DatasetInputs] = {}

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, run_dir: str | Path, *, device: str = "auto", llm: tuple | None = None,
                        progress: bool = True, verify: bool = True) -> "MLaGA":
        """Load RUN2 (a finished ``train instruct`` run or an ``export`` of one).

        Every file is checked before use (``mlaga_fast.runs.open``), the run's sha256 checksums included;
        ``verify=False`` skips the checksums, for runs edited on purpose (``integrity`` then says
        "unverified", and evaluations record it).
        llm: an already loaded (model, tokenizer) of the same LLM, to load several runs without loading
        the LLM again; not allowed for LoRA runs (their adapters would change the shared model)."""
        run = open_run(run_dir, "instruct", verify=verify)
        man = run.manifest
        tpl = man.get("templates") or {}
        if tpl.get("fingerprint") != templates_fingerprint(tpl.get("set", "compact")):
            raise ValueError(f"{run_dir} was trained with other prompt templates (set {tpl.get('set')!r}, "
                             f"fingerprint {tpl.get('fingerprint')}); retrain Stage 2")
        model = GraphLLM.from_run(run, device=pick_device(device), llm=llm, progress=progress)
        m = cls(run.path, man, model)
        m.integrity = run.integrity
        return m

    def dataset(self, data_dir: str | Path, features: str | Path | None = None, *,
                progress: bool = False) -> DatasetInputs:
        """The checked inputs of a dataset directory (graph, features, node tokens), loaded once."""
        key = (str(Path(data_dir).resolve()), None if features is None else features_arg(features))
        ds = self._data.get(key)
        if ds is None:
            align = bundled_aligner(self.run_dir, self.manifest)
            ds = load_dataset_inputs(data_dir, features, source=self.config["node_source"], align_dir=align,
                                     allow_unseen=True, device=str(self.device), progress=progress,
                                     images=self.model.projectors.image_tokens > 0,
                                     verify=self.integrity != "unverified")
            want = (self.manifest["dims"]["nq"], self.manifest["dims"]["d"])
            if tuple(ds.tokens.shape[1:]) != want:
                raise ValueError(f"{data_dir}: node tokens {tuple(ds.tokens.shape[1:])} do not match the run's "
                                 f"(nq, d) = {want}")
            if ds.image is not None and ds.image.shape[1] != self.manifest["dims"]["image_dim"]:
                raise ValueError(f"{data_dir}: image vectors have {ds.image.shape[1]} dims, the run's image "
                                 f"projector takes {self.manifest['dims']['image_dim']}")
            self._data[key] = ds
        return ds

    def is_transfer(self, ds: DatasetInputs) -> bool:
        """True when the run was not trained on this dataset (zero-shot transfer)."""
        return ds.graph.fingerprint not in [r["graph_fingerprint"] for r in self.manifest["inputs"]["datasets"]]

    # --- prompts --------------------------------------------------------------------------------------
    def builder(self, ds: DatasetInputs):
        return builder_for(self.config, self.tokenizer, ds.graph, self.manifest["dims"]["nq"],
                           self.model.projectors.image_tokens)

    def questions(self, kind: str, wording: str, n: int) -> list[str]:
        """n questions of ``kind`` (nc | lp | describe) in the templates' ``trained`` or ``held-out`` wordings,
        cycled in order. Held-out wordings are refused when the run recorded training on one of them."""
        words = load_templates()["wordings"]
        qs = words[f"{kind}_train" if wording == "trained" else f"{kind}_held_out"]
        if wording == "held-out":
            seen = set(self.manifest.get("wordings", {}).get("trained", {}).get(kind, []))
            if seen & set(qs):
                raise ValueError(f"{self.run_dir} was trained on the wordings {sorted(seen & set(qs))}, which the "
                                 "templates now hold out: they cannot measure unseen wordings for this run")
        return cycle_wordings(qs, n)

    def nc_examples(self, ds: DatasetInputs, nodes: Sequence[int], demos: str | None = None, seed: int = 0, *,
                    questions: Sequence[str] | None = None) -> list:
        """NC prompts for ``nodes`` with demonstrations ``demos`` (ppr | random | none; None = as trained); with
        ``questions`` (one per node) asked in ``ask``'s layout in those wordings instead."""
        cfg = self.config
        mode = demos or (cfg["demos"] if cfg["num_demos"] > 0 else "none")
        if mode not in DEMO_MODES:
            raise ValueError(f"demos: {mode!r} is not one of {list(DEMO_MODES)}")
        table = (ppr_demo_table(ds.graph, k=max(cfg["ppr_k"], cfg["num_demos"]), alpha=cfg["ppr_alpha"],
                                eps=cfg["ppr_eps"], cache_dir=demo_cache_dir(ds), progress=False)
                 if mode == "ppr" else None)
        nodes = self.check_nodes(ds, nodes)
        nd = NCDemos(ds.graph, mode, cfg["num_demos"], seed, table)
        if questions is not None:
            return asked_nc_examples(ds.graph, self.builder(ds), nodes, nd, questions, with_label=False)
        return nc_examples(ds.graph, self.builder(ds), nodes, nd, with_label=False)

    def description_examples(self, ds: DatasetInputs, nodes: Sequence[int], questions: Sequence[str]) -> list:
        """Node-description prompts for labelled ``nodes``, one question each (generation reads them)."""
        return description_examples(ds.graph, self.builder(ds), self.check_nodes(ds, nodes), questions,
                                    with_label=False)

    def lp_examples(self, ds: DatasetInputs, pairs: Any, demos: str | None = None, seed: int = 0, *,
                    questions: Sequence[str] | None = None) -> list:
        """LP prompts for node pairs ([n, 2] or [2, n]); with ``questions`` asked in ``ask``'s layout instead."""
        pairs = np.asarray(pairs, dtype=np.int64)
        if pairs.ndim != 2 or 2 not in pairs.shape:
            raise ValueError(f"pairs: expected [n, 2] or [2, n] node ids, got shape {pairs.shape}")
        pairs = pairs.T if pairs.shape[1] == 2 and pairs.shape[0] != 2 else pairs
        self.check_nodes(ds, pairs.reshape(-1))
        if questions is not None:
            return asked_lp_examples(self.builder(ds), pairs, np.full(pairs.shape[1], -1), questions, with_label=False)
        use_demo = self.config.get("lp_demo", False) and demos != "none"
        links = LinkPairs(ds.graph, seed=seed) if use_demo else None
        return lp_examples(self.builder(ds), pairs, np.full(pairs.shape[1], -1), links, with_label=False)

    @staticmethod
    def check_nodes(ds: DatasetInputs, nodes: Any) -> np.ndarray:
        """int64 [n] node ids, refused with a one-line error when one is outside the dataset."""
        nodes = np.asarray(nodes, dtype=np.int64).reshape(-1)
        bad = np.flatnonzero((nodes < 0) | (nodes >= ds.graph.num_nodes))
        if bad.size:
            raise ValueError(f"node id {int(nodes[bad[0]])} is outside [0, {ds.graph.num_nodes}) of {ds.name}")
        return nodes

    # --- reading the LLM ------------------------------------------------------------------------------
    def score(self, ds: DatasetInputs, examples: list, *, batch_size: int = 8, generate: bool = False,
              temperature: float = 0.0, seed: int = 0, max_new_tokens: int | None = None, progress: bool = False,
              candidates: bool = True):
        """(scores [n, C] constrained log-likelihoods of the task's answers (None when ``candidates`` is
        False), generated ids per example or None)."""
        if not examples:
            raise ValueError("no examples to score")
        task = examples[0].task
        b = self.builder(ds)
        cands = (b.nc_answers if task == "nc" else b.lp_answers) if candidates else None
        inputs = [NodeInputs(ds.tokens, ds.image)]
        gen_rng = torch.Generator().manual_seed(seed)
        scores, gens = [], []
        for lo in bar_of(range(0, len(examples), batch_size), desc=f"score {task}", enabled=progress):
            batch = collate(examples[lo:lo + batch_size], self.tokenizer.pad_token_id, inputs, with_answer=False)
            sc, g = self.model.read(batch, cands, generate=generate, temperature=temperature, generator=gen_rng,
                                    max_new_tokens=max_new_tokens)
            if sc is not None:
                scores.append(sc.numpy())
            gens += g or []
        return (np.concatenate(scores) if scores else None), (gens if generate else None)

    def predict_nc(self, data: str | Path, nodes: Sequence[int], *, features: str | Path | None = None,
                   demos: str | None = None, batch_size: int = 8, seed: int = 0) -> Prediction:
        """Classes of ``nodes`` [n] by constrained scoring over the dataset's class names."""
        ds = self.dataset(data, features)
        scores, _ = self.score(ds, self.nc_examples(ds, nodes, demos, seed), batch_size=batch_size)
        return Prediction(scores.argmax(1), scores, list(ds.graph.class_names))

    def predict_lp(self, data: str | Path, pairs: Any, *, features: str | Path | None = None,
                   demos: str | None = None, batch_size: int = 8, seed: int = 0) -> Prediction:
        """P(Yes) of node pairs ([n, 2] or [2, n]) from the log-likelihoods of the answers Yes and No."""
        ds = self.dataset(data, features)
        scores, _ = self.score(ds, self.lp_examples(ds, pairs, demos, seed), batch_size=batch_size)
        p_yes = 1.0 / (1.0 + np.exp(scores[:, 0] - scores[:, 1]))  # softmax over {No, Yes}
        return Prediction(scores.argmax(1), scores, ["No", "Yes"], p_yes)

    def ask(self, data: str | Path, node: int | Sequence[int], question: str, *, features: str | Path | None = None,
            demos: str = "none", seed: int = 0, temperature: float = 0.0, max_new_tokens: int = 48) -> str:
        """Free generation about one node (with ``demos`` ppr | random | none) or a pair of nodes: the run's
        task intro, the node(s), then ``question``. Seeded; greedy at temperature 0.

        Never an empty string: when the LLM ends its answer at once (a run tuned on its task prompts can do
        that on a wording it never saw), the answer is the run's constrained reading of the node, the class
        it scores highest (or, for a pair, Yes/No with P(Yes)), marked as such in brackets."""
        ds = self.dataset(data, features)
        nodes = self.check_nodes(ds, [node] if np.ndim(node) == 0 else node).tolist()
        if len(nodes) not in (1, 2):
            raise ValueError(f"ask: one node or a pair of nodes, got {len(nodes)}")
        if not question.strip():
            raise ValueError("ask: the question is empty")
        shown, shown_y = [], []
        if len(nodes) == 1 and demos != "none":
            shown = self.nc_examples(ds, nodes, demos, seed)[0].demos
            shown_y = [int(np.asarray(ds.graph.labels)[d]) for d in shown]
        ex = self.builder(ds).ask(nodes, question, shown, shown_y)
        _, gens = self.score(ds, [ex], generate=True, temperature=temperature, seed=seed,
                             max_new_tokens=max_new_tokens, candidates=False)
        text = answer_text(self.tokenizer, gens[0], self.tokenizer.eos_token_id)
        if text:
            return text
        why = NO_FREE_ANSWER
        if len(nodes) == 1:
            pred = self.predict_nc(data, nodes, features=features, demos=demos, seed=seed)
            return f"{pred.class_names[int(pred.labels[0])]} [{why}; the category this run scores highest]"
        pred = self.predict_lp(data, [nodes], features=features, demos=demos, seed=seed)
        return (f"{'Yes' if pred.labels[0] == 1 else 'No'} [{why}; this run's link score, "
                f"P(Yes) = {float(pred.p_yes[0]):.2f}]")
