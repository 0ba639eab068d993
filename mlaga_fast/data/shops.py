"""The synthetic shops by name, and the parsing of a category selection (``--categories 9-16`` or names)."""
from __future__ import annotations

from mlaga_fast.data import vocab, vocab_grocery

__all__ = ["SHOPS", "get_shop", "parse_categories"]

SHOPS: dict[str, vocab.Shop] = {s.name: s for s in (vocab.TOYS, vocab_grocery.SHOP)}


def get_shop(name: str) -> vocab.Shop:
    if name not in SHOPS:
        raise ValueError(f"shop: {name!r} is not one of {sorted(SHOPS)}")
    return SHOPS[name]


def parse_categories(spec: str | list | tuple, shop: vocab.Shop) -> tuple[int, ...]:
    """0-based category indices of ``shop`` from 1-based numbers and ranges ("9-16", "1,3,5-7") or
    category names (comma-separated, case-insensitive), in the order given. Repeats are refused."""
    items = [str(s).strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items:
        raise ValueError("categories: empty selection")
    k = len(shop.categories)
    by_name = {c.name.lower(): i for i, c in enumerate(shop.categories)}
    out: list[int] = []
    for item in items:
        lo, sep, hi = item.partition("-")
        if lo.strip().isdigit() and (not sep or hi.strip().isdigit()):
            a, b = int(lo), int(hi) if sep else int(lo)
            if not 1 <= a <= b <= k:
                raise ValueError(f"categories: {item!r} is outside 1-{k} (the {shop.name} shop has {k} categories)")
            out += range(a - 1, b)
        elif item.lower() in by_name:
            out.append(by_name[item.lower()])
        else:
            raise ValueError(f"categories: {item!r} is neither a number in 1-{k} nor a category of the "
                             f"{shop.name} shop ({', '.join(c.name for c in shop.categories)})")
    if len(set(out)) != len(out):
        raise ValueError(f"categories: {spec!r} names a category twice")
    return tuple(out)
