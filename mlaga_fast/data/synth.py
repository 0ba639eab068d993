"""Synthetic product catalogue: a graph, texts, labels, splits and lazily rendered pictures.

What it exercises (the things MLaGA claims to handle):
* structure: a degree-corrected stochastic block model with power-law degree propensities, whose
  edge homophily (fraction of edges joining same-class nodes) is set exactly by the caller;
* text: titles and descriptions built from category vocabularies mixed with a shared vocabulary,
  with per-slot word noise so text alone is informative but not perfect;
* images: per-class visual signatures with within-class jitter (see synth_images);
* modality mismatch: a chosen fraction of nodes shows another class's picture, another fraction
  carries another class's text; the flags are stored so experiments can score them;
* a missing modality: ``modalities="text"`` or ``"image"`` keeps one of the two (the other is absent
  from the dataset, not blanked), drawn from the same streams as the full catalogue.

Every part draws from its own NumPy generator seeded by (seed, part), so the same seed gives the
same arrays and texts byte for byte, and changing one part's code leaves the others' draws alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlaga_fast.data import vocab
from mlaga_fast.data.shops import get_shop, parse_categories

MODALITIES = ("text,image", "text", "image")

# Per-part seed tags: each part's generator is default_rng([seed, tag]).
_TAG_LABELS, _TAG_GRAPH, _TAG_IMG_MIS, _TAG_TXT_MIS, _TAG_TEXT, _TAG_SPLIT, _TAG_LINKS = range(1, 8)


@dataclass(frozen=True)
class SynthConfig:
    nodes: int = 3000
    classes: int = 8
    homophily: float = 0.7  # requested edge homophily
    image_mismatch: float = 0.15  # fraction of nodes whose picture shows another class
    text_mismatch: float = 0.05  # fraction of nodes whose text describes another class
    seed: int = 0
    mean_degree: float = 8.0
    degree_exponent: float = 2.5  # P(k) ~ k^-exponent for the degree propensities
    text_noise: float = 0.25  # chance that each feature/use phrase comes from a random class
    image_size: int = 64
    name: str = "synthetic-catalogue"
    modalities: str = "text,image"  # which node modalities the dataset holds: text,image | text | image
    shop: str = "toys"  # whose vocabulary the texts and pictures come from (mlaga_fast.data.shops)
    # 0-based categories of the shop, class k = categories[k]; () = the first `classes`
    categories: tuple[int, ...] = ()

    def validate(self) -> None:
        if self.modalities not in MODALITIES:
            raise ValueError(f"modalities must be one of {', '.join(MODALITIES)}, got {self.modalities!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        k = len(get_shop(self.shop).categories)
        if not 2 <= self.classes <= k:
            raise ValueError(f"classes must be in [2, {k}] (the {self.shop} shop's categories), got {self.classes}")
        if self.categories:
            if len(self.categories) != self.classes:
                raise ValueError(f"categories: {len(self.categories)} given for {self.classes} classes")
            if len(set(self.categories)) != len(self.categories) or not all(0 <= c < k for c in self.categories):
                raise ValueError(f"categories: {list(self.categories)} must be distinct indices in [0, {k})")
        if not 2.0 <= self.mean_degree <= 64.0:
            raise ValueError(f"mean_degree must be in [2, 64], got {self.mean_degree}")
        # Same-class edges must fill at most half of the possible same-class pairs (at homophily 1),
        # or the sampler stalls on repeats; this bounds the nodes needed per class.
        least = int(math.ceil((2 * self.mean_degree + 1) * self.classes))
        if self.nodes < least:
            raise ValueError(f"nodes must be at least (2 * mean_degree + 1) * classes = {least} for "
                             f"mean_degree {self.mean_degree:g} and {self.classes} classes, got {self.nodes}")
        if self.nodes > 50_000_000:
            raise ValueError(f"nodes must be at most 50,000,000, got {self.nodes}")
        for field in ("homophily", "image_mismatch", "text_mismatch", "text_noise"):
            v = getattr(self, field)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"{field} must be in [0, 1], got {v}")
        if not 2.05 <= self.degree_exponent <= 5.0:
            raise ValueError(f"degree_exponent must be in [2.05, 5], got {self.degree_exponent}")
        if not 8 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {self.image_size}")

    def category_list(self) -> tuple[vocab.Category, ...]:
        """The catalogue's categories in class order."""
        cats = get_shop(self.shop).categories
        return tuple(cats[i] for i in self.categories) if self.categories else cats[: self.classes]


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, tag])


def balanced_labels(n: int, c: int, rng: np.random.Generator) -> np.ndarray:
    """int64 [n] labels with class sizes differing by at most one, in random node order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % c)


# ---- graph -------------------------------------------------------------------------------------

class _WeightedSampler:
    """Draws nodes with probability proportional to a weight, optionally inside / outside a class.

    Nodes are laid out class by class; one cumulative-weight array serves all three draws via a
    single searchsorted: inside class z maps u into z's weight interval, outside maps it into the
    total interval with z's piece cut out.
    """

    def __init__(self, weight: np.ndarray, labels: np.ndarray, c: int) -> None:
        self.order = np.argsort(labels, kind="stable")  # [N] node ids grouped by class
        self.cum = np.cumsum(weight[self.order])  # [N] float64
        self.total = float(self.cum[-1])
        counts = np.bincount(labels, minlength=c)
        self.first = np.concatenate([[0], np.cumsum(counts)])  # [C+1] index range per class
        cum0 = np.concatenate([[0.0], self.cum])
        self.mass_start = cum0[self.first[:-1]]  # [C] weight before class z
        self.mass = cum0[self.first[1:]] - self.mass_start  # [C] weight of class z
        self.labels = labels

    def _lookup(self, r: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.cum, r, side="right")
        return np.minimum(pos, self.cum.shape[0] - 1)

    def any(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.order[self._lookup(rng.random(n) * self.total)]

    def inside(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        pos = self._lookup(self.mass_start[z] + rng.random(z.shape[0]) * self.mass[z])
        # Rounding at a class boundary could step into the next class: clamp to z's own range.
        pos = np.clip(pos, self.first[z], self.first[z + 1] - 1)
        return self.order[pos]

    def outside(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        r = rng.random(z.shape[0]) * (self.total - self.mass[z])
        r = r + (r >= self.mass_start[z]) * self.mass[z]  # skip over class z's interval
        return self.order[self._lookup(r)]  # boundary rounding may still hit z: caller filters


def _pair_keys(u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(u, v) * n + np.maximum(u, v)  # [M] int64 undirected key


def _take_new(keys: np.ndarray, have: np.ndarray, need: int) -> np.ndarray:
    """Up to ``need`` keys not in ``have``, first occurrences in draw order (keeps them random)."""
    if need <= 0 or keys.size == 0:
        return keys[:0]
    uniq, first = np.unique(keys, return_index=True)
    fresh = ~np.isin(uniq, have, assume_unique=True)
    first = np.sort(first[fresh])
    return keys[first[:need]]


def dcsbm_edges(labels: np.ndarray, c: int, *, mean_degree: float, exponent: float, homophily: float,
                rng: np.random.Generator, max_rounds: int = 64) -> tuple[np.ndarray, dict]:
    """Undirected edges of a degree-corrected SBM as sorted unique keys min*N+max, plus stats.

    Degree propensities theta ~ Pareto(exponent - 1) (so the degree density falls as k^-exponent),
    capped at the structural cutoff sqrt(mean_degree * N) beyond which a simple graph cannot hold
    the expected degree without forcing repeated pairs. Edge counts are fixed up front: of the
    M = N * mean_degree / 2 edges, round(homophily * M) join same-class nodes, so the realised
    homophily is exact, not just in expectation. Every node first draws one partner ("anchor")
    so none is isolated: Stage 1 needs a neighbour per node as its contrastive positive.
    """
    n = labels.shape[0]
    theta = (1.0 - rng.random(n)) ** (-1.0 / (exponent - 1.0))  # [N] Pareto, min 1
    cap = math.sqrt(mean_degree * n) / mean_degree  # cutoff as a multiple of the mean
    for _ in range(3):  # capping lowers the mean; a few passes settle it
        theta = np.minimum(theta, cap * theta.mean())
    sampler = _WeightedSampler(theta, labels, c)

    m_total = int(round(n * mean_degree / 2))
    m_in = int(round(homophily * m_total))
    targets = {True: m_in, False: m_total - m_in}
    have = {True: np.empty(0, np.int64), False: np.empty(0, np.int64)}

    def draw(src: np.ndarray, intra: bool) -> np.ndarray:
        z = labels[src]
        dst = sampler.inside(z, rng) if intra else sampler.outside(z, rng)
        ok = (dst != src) & ((labels[dst] == z) == intra)
        return _pair_keys(src[ok], dst[ok], n)

    # Anchors: each node draws one partner, same class with probability `homophily`.
    src = rng.permutation(n).astype(np.int64)
    is_in = rng.random(n) < homophily
    for intra in (True, False):
        keys = draw(src[is_in == intra], intra)
        have[intra] = _take_new(keys, have[intra], targets[intra])
    # Top up each kind to its exact count with propensity-weighted sources.
    rounds = {True: 0, False: 0}
    for intra in (True, False):
        while have[intra].size < targets[intra] and rounds[intra] < max_rounds:
            rounds[intra] += 1
            need = targets[intra] - have[intra].size
            keys = draw(sampler.any(int(need * 1.3) + 16, rng), intra)
            have[intra] = np.concatenate([have[intra], _take_new(keys, have[intra], need)])
            have[intra].sort()  # keeps np.isin fast and the result order canonical
    keys = np.sort(np.concatenate([have[True], have[False]]))
    stats = {"edges_requested": m_total, "edges": int(keys.size), "intra_edges": int(have[True].size),
             "topup_rounds": rounds[True] + rounds[False], "degree_cap": float(cap * mean_degree)}
    return keys, stats


def keys_to_csr(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric CSR (indptr int64 [N+1], indices int64 [2M], sorted rows) from undirected keys."""
    u, v = keys // n, keys % n
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    order = np.argsort(src * n + dst, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, np.ascontiguousarray(dst[order], dtype=np.int64)


def edge_homophily(indptr: np.ndarray, indices: np.ndarray, labels: np.ndarray) -> float:
    src = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    return float(np.mean(labels[src] == labels[indices])) if indices.size else float("nan")


# ---- modality mismatch, texts, splits ------------------------------------------------------------

def mismatch(labels: np.ndarray, c: int, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(shown_class int64 [N], flag bool [N]): exactly round(frac*N) nodes get a different class."""
    n = labels.shape[0]
    flag = np.zeros(n, dtype=bool)
    flag[rng.permutation(n)[: int(round(frac * n))]] = True
    shift = rng.integers(1, c, size=n)  # a uniformly random *other* class
    shown = np.where(flag, (labels + shift) % c, labels).astype(np.int64)
    return shown, flag


def _cap_words(s: str) -> str:
    return " ".join(w[:1].upper() + w[1:] for w in s.split())


_TITLES = ("{brand} {adj} {noun}, {colour}", "{brand} {noun} {age}", "{adj} {noun} by {brand} ({pack})")
_BODIES = ("This {noun_lc} comes with {f1} and {f2}.", "Includes {f1}, plus {f2}.",
           "Features {f1} and {f2}, {age}.")
_USES = ("Perfect for {use}.", "Great for {use}.", "Ideal for {use}.")


def make_texts(text_class: np.ndarray, c: int, noise: float, rng: np.random.Generator, *,
               categories: tuple[vocab.Category, ...] | None = None, shop: vocab.Shop = vocab.TOYS) -> list[str]:
    """One "title. description" string per node, describing class ``text_class[i]`` (class k is
    ``categories[k]``, default the shop's first ``c``); the class-free words come from ``shop``."""
    n = text_class.shape[0]
    cats = shop.categories[:c] if categories is None else tuple(categories)
    if len(cats) != c:
        raise ValueError(f"make_texts: {len(cats)} categories given for {c} classes")
    nouns = [[(_cap_words(w), w) for w in cat.nouns] for cat in cats]
    # All random choices are drawn as arrays up front; the loop only formats strings.
    slot_cls = np.where(rng.random((n, 3)) < noise, rng.integers(0, c, (n, 3)), text_class[:, None])
    pick = rng.integers(0, 1 << 30, size=(n, 12))
    out = []
    for i in range(n):
        t, (p0, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11) = int(text_class[i]), pick[i].tolist()
        s0, s1, s2 = slot_cls[i].tolist()
        noun_t, noun_lc = nouns[t][p0 % len(nouns[t])]
        f1s, f2s = cats[s0].features, cats[s1].features
        f1 = f1s[p1 % len(f1s)]
        f2 = f2s[p2 % len(f2s)]
        if f2 == f1:
            f2 = f2s[(p2 + 1) % len(f2s)]
        uses = cats[s2].uses
        fill = {"brand": shop.brands[p3 % len(shop.brands)], "adj": shop.adjectives[p4 % len(shop.adjectives)],
                "noun": noun_t, "noun_lc": noun_lc, "colour": shop.colours[p5 % len(shop.colours)],
                "age": shop.ages[p6 % len(shop.ages)], "pack": shop.packs[p7 % len(shop.packs)],
                "f1": f1, "f2": f2, "use": uses[p8 % len(uses)]}
        title = _TITLES[p9 % len(_TITLES)].format(**fill)
        body = _BODIES[p10 % len(_BODIES)].format(**fill)
        use = _USES[(p11 >> 8) % len(_USES)].format(**fill)
        out.append(f"{title}. {body} {use} {shop.shop_lines[p11 % len(shop.shop_lines)]}")
    return out


def stratified_split(labels: np.ndarray, c: int, rng: np.random.Generator,
                     fractions: tuple[float, float] = (0.6, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted int64 (train, val, test) node ids: 60/20/20 inside every class."""
    parts: tuple[list, list, list] = ([], [], [])
    for k in range(c):
        ids = rng.permutation(np.flatnonzero(labels == k))
        a = int(round(fractions[0] * ids.size))
        b = a + int(round(fractions[1] * ids.size))
        for dst, chunk in zip(parts, (ids[:a], ids[a:b], ids[b:])):
            dst.append(chunk)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)  # type: ignore[return-value]


# ---- the catalogue ---------------------------------------------------------------------------------

def _derived_seed(seed: int, tag: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, tag]).generate_state(1)[0])


def generate(cfg: SynthConfig, *, link_split: bool = True, progress: bool = False):
    """Build the catalogue in memory as a MultimodalGraph (pictures render on demand)."""
    from tqdm import tqdm

    from mlaga_fast._version import __version__
    from mlaga_fast.data.graph import MultimodalGraph
    from mlaga_fast.data.splits import split_links
    from mlaga_fast.data.synth_images import STYLE_VERSION, SyntheticImages

    cfg.validate()
    n, c = cfg.nodes, cfg.classes
    steps = tqdm(total=5, desc=f"synth {n} nodes", unit="step", disable=not progress, leave=False)
    labels = balanced_labels(n, c, _rng(cfg.seed, _TAG_LABELS))
    keys, gstats = dcsbm_edges(labels, c, mean_degree=cfg.mean_degree, exponent=cfg.degree_exponent,
                               homophily=cfg.homophily, rng=_rng(cfg.seed, _TAG_GRAPH))
    indptr, indices = keys_to_csr(keys, n)
    del keys
    steps.update()
    image_class, image_flag = mismatch(labels, c, cfg.image_mismatch, _rng(cfg.seed, _TAG_IMG_MIS))
    text_class, text_flag = mismatch(labels, c, cfg.text_mismatch, _rng(cfg.seed, _TAG_TXT_MIS))
    shop, cats = get_shop(cfg.shop), cfg.category_list()
    texts = make_texts(text_class, c, cfg.text_noise, _rng(cfg.seed, _TAG_TEXT), categories=cats, shop=shop)
    steps.update()
    train, val, test = stratified_split(labels, c, _rng(cfg.seed, _TAG_SPLIT))
    steps.update()
    stats = {**gstats, "realised_homophily": edge_homophily(indptr, indices, labels),
             "max_degree": int(np.diff(indptr).max()), "isolated_nodes": int((np.diff(indptr) == 0).sum()),
             "image_mismatched": int(image_flag.sum()), "text_mismatched": int(text_flag.sum()),
             "missing_images": 0, "self_loops_dropped": 0, "duplicates_merged": 0}
    truth = {"image_class": image_class, "image_mismatch": image_flag, "text_class": text_class,
             "text_mismatch": text_flag}
    config = asdict(cfg)
    if cfg.modalities == MODALITIES[0]:
        del config["modalities"]  # full catalogues keep the metadata (and fingerprint) they had before the option
    if cfg.shop == vocab.TOYS.name and not cfg.categories:
        del config["shop"], config["categories"]  # likewise the default toy catalogue, before --shop/--categories
    meta = {"generator": "mlaga_fast.data.synth", "config": config, "image_style_version": STYLE_VERSION,
            "mlaga_fast_version": __version__, **_domain(cfg),
            # Ground truth for scoring mismatch filtering, NOT model inputs (they leak the label).
            "synth_truth_keys": [TRUTH_PREFIX + k for k in truth]}
    graph = MultimodalGraph(
        cfg.name, indptr, indices, texts=texts if "text" in cfg.modalities else None,
        images=(SyntheticImages(image_class, seed=cfg.seed, size=cfg.image_size, num_classes=c, looks=_looks(cfg))
                if "image" in cfg.modalities else None),
        labels=labels, class_names=[cat.name for cat in cats],
        train=train, val=val, test=test, stats=stats, meta=meta,
        features={TRUTH_PREFIX + k: v for k, v in truth.items()}, validate=False)
    steps.update()
    if link_split:
        graph.set_link_split(split_links(graph, seed=_derived_seed(cfg.seed, _TAG_LINKS)))
    graph.validate()
    steps.update()
    steps.close()
    return graph


def _domain(cfg: SynthConfig) -> dict:
    """The prompts' domain for another shop's catalogue; the default toy catalogue keeps its name as domain."""
    return {"domain": get_shop(cfg.shop).domain} if cfg.shop != vocab.TOYS.name else {}


def _looks(cfg: SynthConfig) -> tuple[vocab.Look, ...] | None:
    """The pictures' looks in class order; None (the renderer's default) for the toy store's first classes."""
    if cfg.shop == vocab.TOYS.name and tuple(cfg.categories) in ((), tuple(range(cfg.classes))):
        return None
    return tuple(cat.look for cat in cfg.category_list())


TRUTH_PREFIX = "synth_"


def synth_truth(graph) -> dict[str, np.ndarray]:
    """The per-node mismatch truth of a synthetic catalogue (in memory or loaded from disk):
    image_class / text_class (int64 [N], the class each modality shows) and image_mismatch /
    text_mismatch (bool [N]). Raises ValueError for a dataset that is not a synthetic catalogue."""
    keys = ("image_class", "image_mismatch", "text_class", "text_mismatch")
    missing = [k for k in keys if TRUTH_PREFIX + k not in graph.features]
    if missing:
        raise ValueError(f"dataset {graph.name!r} has no synthetic mismatch truth (missing features "
                         f"{', '.join(TRUTH_PREFIX + k for k in missing)}); make it with `mlaga-fast data synth`")
    return {k: np.asarray(graph.features[TRUTH_PREFIX + k]) for k in keys}


def make_catalogue(out_dir=None, nodes: int = 3000, classes: int = 8, homophily: float = 0.7,
                   image_mismatch: float = 0.15, text_mismatch: float = 0.05, seed: int = 0, *,
                   mean_degree: float = 8.0, degree_exponent: float = 2.5, text_noise: float = 0.25,
                   image_size: int = 64, name: str = "synthetic-catalogue", modalities: str = "text,image",
                   link_split: bool = True, progress: bool = False, shop: str = "toys",
                   categories: str | list | tuple | None = None):
    """Generate a synthetic product catalogue; also save it as a dataset directory when ``out_dir``
    is given (atomically, via mlaga_fast.data.store.save). ``modalities`` "text" or "image" leaves the
    other modality out of the dataset. Returns the MultimodalGraph.

    ``shop`` picks the vocabulary; ``categories`` (1-based numbers and ranges such as "9-16", or category
    names) picks the shop's categories, which then set ``classes``."""
    cats = parse_categories(categories, get_shop(shop)) if categories is not None else ()
    classes = len(cats) if cats else classes
    cfg = SynthConfig(nodes=int(nodes), classes=int(classes), homophily=float(homophily), shop=shop, categories=cats,
                      image_mismatch=float(image_mismatch), text_mismatch=float(text_mismatch), seed=int(seed),
                      mean_degree=float(mean_degree), degree_exponent=float(degree_exponent),
                      text_noise=float(text_noise), image_size=int(image_size), name=name,
                      modalities=modalities)
    graph = generate(cfg, link_split=link_split, progress=progress)
    if out_dir is not None:
        from mlaga_fast.data.store import save

        save(graph, Path(out_dir))
    return graph


def dress_graph(path, out_dir=None, *, shop: str = "toys", seed: int = 0, image_mismatch: float = 0.15,
                text_mismatch: float = 0.05, text_noise: float = 0.25, image_size: int = 64, name: str | None = None,
                link_split: bool = True):
    """A real graph's topology and node labels (a DGL file such as MAGB's ToysGraph.pt, read in place)
    dressed with ``shop``'s synthetic texts and pictures, drawn per label as ``generate`` draws them.

    Real class l becomes the shop's category l when the graph has at most K classes (K = the shop's
    categories); with more, class l becomes category l mod K, so classes l and l + K merge into one
    (the mapping is stored in meta["dressed"]). Unlabelled nodes (-1) stay unlabelled and describe a
    random category. Splits are drawn here (60/20/20 per class), as for a synthetic catalogue.
    """
    from mlaga_fast._version import __version__
    from mlaga_fast.data.dgl_format import read_dgl_graph
    from mlaga_fast.data.graph import MultimodalGraph
    from mlaga_fast.data.splits import split_links
    from mlaga_fast.data.synth_images import STYLE_VERSION, SyntheticImages

    sh = get_shop(shop)
    for field_name, v in (("image_mismatch", image_mismatch), ("text_mismatch", text_mismatch),
                          ("text_noise", text_noise)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{field_name} must be in [0, 1], got {v}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dress: {path} is not a file (a DGL graph such as ToysGraph.pt)")
    dg = read_dgl_graph(path)
    raw = dg.ndata.get("label")
    if raw is None:
        raise ValueError(f"dress: {path.name} has no node data 'label' to dress by")
    raw = np.asarray(raw).reshape(-1).astype(np.int64)
    if raw.shape[0] != dg.num_nodes:
        raise ValueError(f"dress: {path.name} holds {raw.shape[0]} labels for {dg.num_nodes} nodes")
    real_classes = int(raw.max()) + 1 if (raw >= 0).any() else 0
    k = len(sh.categories)
    c = min(real_classes, k)
    if c < 2:
        raise ValueError(f"dress: {path.name} has {real_classes} labelled classes; at least 2 are needed")
    labels = np.where(raw >= 0, raw % k, -1).astype(np.int64)  # [N] category of each node, -1 unlabelled
    n = dg.num_nodes
    base = labels.copy()
    base[labels < 0] = _rng(seed, _TAG_LABELS).integers(0, c, int((labels < 0).sum()))
    image_class, image_flag = mismatch(base, c, image_mismatch, _rng(seed, _TAG_IMG_MIS))
    text_class, text_flag = mismatch(base, c, text_mismatch, _rng(seed, _TAG_TXT_MIS))
    cats = sh.categories[:c]
    texts = make_texts(text_class, c, text_noise, _rng(seed, _TAG_TEXT), categories=cats, shop=sh)
    train, val, test = stratified_split(labels, c, _rng(seed, _TAG_SPLIT))
    truth = {"image_class": image_class, "image_mismatch": image_flag, "text_class": text_class,
             "text_mismatch": text_flag}
    looks = None if sh.name == vocab.TOYS.name else tuple(cat.look for cat in cats)
    meta = {"generator": "mlaga_fast.data.synth.dress_graph", "image_style_version": STYLE_VERSION,
            "mlaga_fast_version": __version__, "domain": sh.domain,
            "dressed": {"graph_file": str(path.resolve()), "shop": sh.name, "seed": int(seed),
                        "graph_classes": real_classes, "shop_categories": k, "classes": c,
                        "category_of_class": [int(l % k) for l in range(real_classes)],
                        "image_mismatch": image_mismatch, "text_mismatch": text_mismatch, "text_noise": text_noise},
            "synth_truth_keys": [TRUTH_PREFIX + key for key in truth]}
    graph = MultimodalGraph.from_edges(
        name or f"{path.stem}-dressed-{sh.name}", dg.src, dg.dst, n, texts=texts,
        images=SyntheticImages(image_class, seed=seed, size=image_size, num_classes=c, looks=looks),
        labels=labels, class_names=[cat.name for cat in cats], train=train, val=val, test=test,
        stats={"image_mismatched": int(image_flag.sum()), "text_mismatched": int(text_flag.sum()),
               "missing_images": 0}, meta=meta,
        features={TRUTH_PREFIX + key: v for key, v in truth.items()})
    graph.stats.update(realised_homophily=edge_homophily(graph.indptr, graph.indices, labels),
                       max_degree=int(np.diff(graph.indptr).max()),
                       isolated_nodes=int((np.diff(graph.indptr) == 0).sum()))
    if link_split:
        graph.set_link_split(split_links(graph, seed=_derived_seed(seed, _TAG_LINKS)))
    graph.validate()
    if out_dir is not None:
        from mlaga_fast.data.store import save

        save(graph, Path(out_dir))
    return graph
