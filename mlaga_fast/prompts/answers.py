"""Reading answers: where candidate answers branch (what constrained scoring compares), and matching a
generated answer to a class, strictly or as the released evaluation does."""
from __future__ import annotations

from typing import Sequence

__all__ = ["branch_points", "answer_text", "match_generation", "match_paper_protocol"]


def branch_points(candidates: Sequence[Sequence[int]]) -> list[list[int]]:
    """For each candidate, the positions j where the candidates that share its first j tokens continue
    with two or more different tokens: the only places where the LLM's choice tells them apart."""
    out = []
    for c in candidates:
        pts = []
        for j in range(len(c)):
            nxt = {d[j] for d in candidates if len(d) > j and tuple(d[:j]) == tuple(c[:j])}
            if len(nxt) > 1:
                pts.append(j)
        out.append(pts)
    return out


def answer_text(tokenizer, gen_ids: list[int], eos_id: int) -> str:
    if eos_id in gen_ids:
        gen_ids = gen_ids[:gen_ids.index(eos_id)]
    return tokenizer.decode(gen_ids, skip_special_tokens=True).strip()


def match_generation(tokenizer, gen_ids: list[int], names: Sequence[str], eos_id: int) -> int:
    """Index of the class whose name equals the decoded answer exactly (after strip), else -1."""
    text = answer_text(tokenizer, gen_ids, eos_id)
    for i, n in enumerate(names):
        if text == n.strip():
            return i
    return -1


def match_paper_protocol(tokenizer, gen_ids: list[int], names: Sequence[str], eos_id: int, task: str) -> int:
    """The released evaluation's matching: NC = lower-cased exact match of a class name (else -1);
    LP = "Yes" (index 1) when the answer contains "Yes", else "No" (0)."""
    text = answer_text(tokenizer, gen_ids, eos_id)
    if task == "lp":
        return int("Yes" in text)
    low = text.lower()
    for i, n in enumerate(names):
        if low == n.strip().lower():
            return i
    return -1
