"""The ONNX Runtime CLIP backend: export, identity-keyed cache, agreement with PyTorch, and no torch at run time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediasearch.core.model_identity import identify
from mediasearch.encoders import onnx_cache
from mediasearch.encoders.onnx_cache import (
    OnnxCacheError,
    export_dir,
    export_identity,
    export_slug,
    is_export_dir,
    publish,
    read_meta,
)
from mediasearch.encoders.onnx_clip import (
    ClipImagePreprocessor,
    ClipTokenizer,
    OnnxClipModel,
    OnnxModelError,
    providers_for,
)
from mediasearch.models import onnx_export
from mediasearch.models.clip import ClipModel
from mediasearch.models.onnx_export import ExportError, export_clip
from mediasearch.models.random_init import build_random_clip
from tests.conftest import COLOURS

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "a photo of a dog",
    "x",
    "",
    "two kids running in front of a house",
    "Ünïcödé   and\tWHITESPACE  ",
    "a very long caption " * 40,  # beyond the 77-token context: truncated
]


def images() -> list[Image.Image]:
    """Colours and shapes, several sizes and modes: landscape, portrait, smaller than the crop, RGBA, L."""
    rng = np.random.default_rng(0)
    out: list[Image.Image] = []
    for i, (w, h) in enumerate([(64, 48), (40, 90), (20, 12), (33, 33), (128, 31)]):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[: h // 2] = list(COLOURS.values())[i]
        out.append(Image.fromarray(arr))
    out.append(Image.fromarray(rng.integers(0, 256, (50, 70, 4), dtype=np.uint8), "RGBA"))
    out.append(Image.fromarray(rng.integers(0, 256, (45, 60), dtype=np.uint8), "L"))
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def export(tiny_clip_dir: Path, cache: Path) -> Path:
    return export_clip(str(tiny_clip_dir), cache_dir=cache)


@pytest.fixture(scope="module")
def onnx_fp32(export: Path) -> OnnxClipModel:
    return OnnxClipModel(str(export), device="cpu", batch_size=4).load()


# -- export ------------------------------------------------------------------------------------------


def test_export_folder_holds_everything_the_runtime_needs(export: Path, tiny_clip_dir: Path) -> None:
    meta = read_meta(export)
    names = {p.name for p in export.iterdir()}
    assert {"image.fp32.onnx", "text.fp32.onnx", "image.int8.onnx", "text.int8.onnx"} <= names
    assert {"tokenizer.json", "meta.json"} <= names
    assert names & {"preprocessor_config.json", "processor_config.json"}
    assert meta["opset"] == 17 and meta["dim"] == 16 and meta["max_text_tokens"] == 77
    # Keyed and labelled by the identity documents record: one identity for both.
    assert meta["model_identity"] == identify(str(tiny_clip_dir)).id
    assert meta["model_identity"].startswith("sha256:") and meta["format"] == onnx_cache.FORMAT_VERSION
    fp32 = meta["agreement"]["fp32_vs_torch"]
    assert fp32["image_min_cosine"] >= 0.9999 and fp32["text_min_cosine"] >= 0.9999
    assert meta["quantisation"]["weight_type"] == "QInt8"
    # The folder is keyed and described by content: the checkpoint's path appears nowhere.
    assert str(tiny_clip_dir) not in (export / "meta.json").read_text()
    assert str(tiny_clip_dir.name) not in export.name
    # int8 weights are a fraction of fp32's.
    assert (export / "image.int8.onnx").stat().st_size < (export / "image.fp32.onnx").stat().st_size


def test_fp32_agrees_with_pytorch(onnx_fp32: OnnxClipModel, clip_model: ClipModel) -> None:
    ims = images()
    got, want = onnx_fp32.embed_images(ims), clip_model.embed_images(ims)
    assert got.shape == want.shape == (len(ims), 16) and got.dtype == np.float32
    assert cosines(got, want).min() >= 0.9999
    got, want = onnx_fp32.embed_texts(TEXTS), clip_model.embed_texts(TEXTS)
    assert got.shape == (len(TEXTS), 16)
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Different inputs give different vectors (a constant output would pass the checks above trivially
    # only if PyTorch were constant too; this guards the fixture as well).
    assert cosines(got[:1], got[3:4])[0] < 0.999


def test_padding_and_batching_do_not_change_embeddings(onnx_fp32: OnnxClipModel) -> None:
    # batch_size=4 splits these into chunks padded to different lengths; each text alone has no padding.
    together = onnx_fp32.embed_texts(TEXTS)
    alone = np.concatenate([onnx_fp32.embed_texts([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    ims = images()
    np.testing.assert_allclose(
        onnx_fp32.embed_images(ims), np.concatenate([onnx_fp32.embed_images([im]) for im in ims]), atol=1e-5
    )


def test_int8_is_quantised_and_close_to_fp32(export: Path, onnx_fp32: OnnxClipModel) -> None:
    int8 = OnnxClipModel(str(export), device="cpu", precision="int8")
    ims = images()
    a, b = int8.embed_images(ims), onnx_fp32.embed_images(ims)
    assert cosines(a, b).min() >= 0.99
    assert np.abs(a - b).max() > 1e-6  # it really is another graph
    assert cosines(int8.embed_texts(TEXTS), onnx_fp32.embed_texts(TEXTS)).min() >= 0.99


def test_interface_matches_clip_model(onnx_fp32: OnnxClipModel, clip_model: ClipModel) -> None:
    for attr in (
        "name",
        "dim",
        "batch_size",
        "load",
        "preprocess",
        "embed_pixels",
        "embed_images",
        "embed_texts",
    ):
        assert hasattr(onnx_fp32, attr), attr
    assert onnx_fp32.dim == clip_model.dim and onnx_fp32.max_text_tokens == clip_model.max_text_tokens
    assert onnx_fp32.embed_images([]).shape == (0, 16) and onnx_fp32.embed_texts([]).shape == (0, 16)
    pixels = np.stack([onnx_fp32.preprocess(im) for im in images()])
    np.testing.assert_allclose(onnx_fp32.embed_pixels(pixels), onnx_fp32.embed_images(images()), atol=1e-6)


def test_identity_is_the_checkpoints(export: Path, clip_model: ClipModel, tmp_path: Path) -> None:
    """Documents record the checkpoint's identity whichever backend embedded them (int8 excepted)."""
    fp32 = OnnxClipModel(str(export), device="cpu")
    assert fp32.identity.id == clip_model.identity.id
    moved = shutil.copytree(export, tmp_path / "opt" / "ml" / "model" / "onnx")  # as packaged
    assert OnnxClipModel(str(moved), device="cpu").identity.id == clip_model.identity.id
    int8 = OnnxClipModel(str(export), device="cpu", precision="int8")
    assert int8.identity.id == f"{clip_model.identity.id}#onnx-int8"


def test_identity_before_the_export_exists_exports_nothing(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """`mediasearch load` only needs the output folder's name: asking the identity must not export."""
    model = OnnxClipModel(str(tiny_clip_dir), device="cpu", cache_dir=tmp_path / "empty", auto_export=False)
    assert model.identity.id == identify(str(tiny_clip_dir)).id and model.folder is None
    int8 = OnnxClipModel(
        str(tiny_clip_dir), precision="int8", cache_dir=tmp_path / "empty", auto_export=False
    )
    assert int8.identity.id == f"{identify(str(tiny_clip_dir)).id}#onnx-int8"
    assert not (tmp_path / "empty").exists()


def test_a_checkpoint_folder_carries_its_export(export: Path, tiny_clip_dir: Path, tmp_path: Path) -> None:
    """model.tar.gz's layout: weights at the root, the export in onnx/. The runtime uses that export
    (no cache, no torch needed), and the folder keeps the checkpoint's identity."""
    packaged = shutil.copytree(tiny_clip_dir, tmp_path / "opt" / "ml" / "model")
    shutil.copytree(export, packaged / "onnx")
    assert identify(str(packaged)).id == identify(str(tiny_clip_dir)).id  # onnx/ is not hashed
    model = OnnxClipModel(str(packaged), device="cpu", cache_dir=tmp_path / "empty", auto_export=False)
    assert model.load().folder == packaged / "onnx"
    assert model.identity.id == identify(str(tiny_clip_dir)).id
    assert not (tmp_path / "empty").exists()

    # Weights changed after packaging: the shipped graphs are another model's, so they are not used.
    weights = packaged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    stale = OnnxClipModel(str(packaged), device="cpu", cache_dir=tmp_path / "empty", auto_export=False)
    with pytest.raises(OnnxModelError, match="no ONNX export"):
        stale.load()


def test_lazy_load_per_tower(export: Path) -> None:
    model = OnnxClipModel(str(export), device="cpu")
    assert not model.loaded and model.dim == 16  # reading the dimension opens no session
    model.embed_texts(["a"])
    assert set(model._sessions) == {"text"}  # a text query never pays for the image tower
    model.embed_images([Image.new("RGB", (8, 8))])
    assert model.loaded and model.providers == ["CPUExecutionProvider"]
    assert OnnxClipModel(str(export), device="cpu").load().loaded  # load() readies both, like ClipModel


def test_failed_agreement_discards_the_export(
    tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnx_export, "FP32_MIN_COSINE", 1.5)  # unreachable: every export "disagrees"
    with pytest.raises(ExportError, match="disagree"):
        export_clip(str(tiny_clip_dir), cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []  # no folder, no staging leftovers


# -- preprocessing and tokenising, against transformers --------------------------------------------


def test_preprocessing_matches_transformers(tiny_clip_dir: Path, clip_model: ClipModel) -> None:
    from transformers import CLIPImageProcessorPil

    ours = ClipImagePreprocessor.from_dir(tiny_clip_dir)
    theirs = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)
    for im in images():
        got = ours(im)
        want = theirs(images=[im.convert("RGB")], return_tensors="np")["pixel_values"][0]
        assert got.shape == want.shape == (3, 32, 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
        np.testing.assert_allclose(got, clip_model.preprocess(im), atol=1e-5, rtol=0)


def test_preprocessing_reads_the_hub_config_format(tmp_path: Path) -> None:
    """openai/clip-vit-base-patch32 ships the old format: ints for size and crop_size."""
    from transformers import CLIPImageProcessorPil

    config = {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 224,
    }
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    ours = ClipImagePreprocessor.from_dir(tmp_path)
    assert (ours.shortest_edge, ours.crop_height, ours.crop_width) == (224, 224, 224)
    theirs = CLIPImageProcessorPil.from_pretrained(tmp_path)
    rng = np.random.default_rng(1)
    for w, h in [(640, 480), (300, 1000), (224, 224), (100, 80)]:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        want = theirs(images=[im], return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(ours(im), want, atol=1e-5, rtol=0)


def test_tokenizer_matches_transformers(tiny_clip_dir: Path) -> None:
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(tiny_clip_dir)
    ids, mask = ClipTokenizer(tiny_clip_dir, max_length=77)(TEXTS)
    want = theirs(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="np")
    assert ids.dtype == mask.dtype == np.int64
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])
    assert ids.shape[1] == 77  # the long text was truncated, the others padded to it


def test_word_tokens_spell_each_word_as_one_token_in_both_tokenizers(tmp_path: Path) -> None:
    """The benches' random CLIP with a word vocabulary: the words' merges must not cut across each
    other ("re" of "red" inside "street"), and both tokenizers must read them the same way."""
    from transformers import AutoTokenizer

    words = ["red", "street", "river", "mountain", "people", "person", "sitting", "sunset", "plate", "the"]
    folder = build_random_clip(tmp_path / "words", size="tiny", words=words)
    ours = ClipTokenizer(folder, max_length=77)
    theirs = AutoTokenizer.from_pretrained(folder)
    for word in words:
        ids, _ = ours([word])
        assert ids.shape == (1, 3)  # start, the word, end
        assert theirs.convert_ids_to_tokens(theirs(word)["input_ids"])[1] == f"{word}</w>"
    texts = ["a red street by the river", "Streets REDDER than 42 sunsets", "zebra"]
    ids, mask = ours(texts)
    want = theirs(texts, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ids, want["input_ids"])
    np.testing.assert_array_equal(mask, want["attention_mask"])
    assert mask[2].sum() == 2 + len("zebra")  # a word outside the list is still spelt letter by letter
    with pytest.raises(ValueError, match="'Red'"):
        build_random_clip(tmp_path / "bad", size="tiny", words=["Red"])


# -- identity and cache ----------------------------------------------------------------------------


def test_second_export_reuses_the_cache(
    export: Path, tiny_clip_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("re-exported a cached model")

    monkeypatch.setattr(onnx_export, "_export_into", no_export)
    assert export_clip(str(tiny_clip_dir), cache_dir=cache) == export
    model = OnnxClipModel(str(tiny_clip_dir), device="cpu", cache_dir=cache).load()
    assert model.folder == export  # a checkpoint directory finds its export by identity


def test_identity_is_content_not_path(tiny_clip_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "opt" / "ml" / "model"
    shutil.copytree(tiny_clip_dir, moved)
    a = export_identity(str(tiny_clip_dir), digest_cache=tmp_path / "c")
    b = export_identity(str(moved), digest_cache=tmp_path / "c")
    assert a.id == b.id and a.id.startswith("sha256:") and str(tmp_path) not in a.id
    assert export_dir(a, tmp_path) == export_dir(b, tmp_path)

    other = build_random_clip(tmp_path / "other", size="tiny", seed=1)  # same shapes, other weights
    assert export_identity(str(other), digest_cache=tmp_path / "c").id != a.id

    # The digest memo is keyed by size and mtime: rewriting a file with other bytes is noticed.
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))
    assert export_identity(str(moved), digest_cache=tmp_path / "c").id != a.id


def test_hub_identity_is_the_commit_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")

    ident = export_identity("org/clip", hf_cache_dir=tmp_path / "hub")
    assert ident.id == f"hub:org/clip@{commit}" and export_slug(ident) == "org--clip--0123456789ab"
    other = "f" * 40
    # An explicit commit is taken as is.
    assert export_identity("org/clip", revision=other).id == f"hub:org/clip@{other}"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OnnxCacheError, match="HF_HUB_OFFLINE"):
        export_identity("org/not-cached", hf_cache_dir=tmp_path / "hub")
    with pytest.raises(OnnxCacheError, match="needs a checkpoint digest or a hub commit"):
        export_slug(identify("org/not-cached"))  # documents may name a hub id alone; exports may not


def test_unusable_folders_are_not_exports(export: Path, tiny_clip_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(export, broken)
    (broken / "text.int8.onnx").unlink()
    assert not is_export_dir(broken)
    old = tmp_path / "old"
    shutil.copytree(export, old)
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "format": 0}))
    assert not is_export_dir(old)
    with pytest.raises(OnnxModelError, match="no ONNX export"):
        OnnxClipModel(str(tiny_clip_dir), cache_dir=tmp_path / "empty", auto_export=False).load()
    with pytest.raises(OnnxModelError, match="neither a local directory nor a valid hub id"):
        OnnxClipModel(str(tmp_path / "no" / "such" / "dir"), auto_export=False).load()


def test_publish_keeps_the_first_folder(export: Path, tmp_path: Path) -> None:
    """The loser of a publish race discards its copy and uses the winner's."""
    final = tmp_path / "final"
    shutil.copytree(export, final)
    marker = (final / "meta.json").read_bytes()
    staging = tmp_path / ".final.tmp-x"
    shutil.copytree(export, staging)
    (staging / "meta.json").write_text((staging / "meta.json").read_text().replace('"opset"', '"opset_"'))
    assert publish(staging, final) == final
    assert not staging.exists() and (final / "meta.json").read_bytes() == marker


CHILD_EXPORT = """
import contextlib, sys
import mediasearch.models.onnx_export as m
if sys.argv[3] == "nolock":  # both processes export in full and race at the rename
    m.export_lock = lambda final: contextlib.nullcontext()
print(m.export_clip(sys.argv[1], cache_dir=sys.argv[2]))
"""


@pytest.mark.parametrize("lock", ["lock", "nolock"])
def test_concurrent_exports_end_with_one_valid_folder(tiny_clip_dir: Path, tmp_path: Path, lock: str) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD_EXPORT, str(tiny_clip_dir), str(cache), lock],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert [p.name for p in folders] == [Path(paths.pop()).name]  # no staging folder left behind
    meta = read_meta(folders[0])
    assert meta["agreement"]["fp32_vs_torch"]["text_min_cosine"] >= 0.9999
    assert OnnxClipModel(str(folders[0]), device="cpu").embed_texts(["ok"]).shape == (1, 16)


# -- torch-free runtime ----------------------------------------------------------------------------

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
"""


def run_without_torch(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    script = BLOCK_TORCH + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


def test_runtime_needs_neither_torch_nor_transformers(export: Path) -> None:
    proc = run_without_torch(
        f"""
        import numpy as np
        from PIL import Image
        from mediasearch.encoders.onnx_clip import OnnxClipModel
        for precision in ("fp32", "int8"):
            model = OnnxClipModel({str(export)!r}, device="cpu", precision=precision)
            assert model.embed_texts(["a red circle", "x"]).shape == (2, 16)
            assert model.embed_images([Image.new("RGB", (40, 30), (200, 10, 10))]).shape == (1, 16)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        assert not loaded, loaded
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_missing_export_without_torch_says_what_to_do(tiny_clip_dir: Path, tmp_path: Path) -> None:
    proc = run_without_torch(
        f"""
        from mediasearch.encoders.onnx_clip import OnnxClipModel, OnnxModelError
        try:
            OnnxClipModel({str(tiny_clip_dir)!r}, cache_dir={str(tmp_path)!r}).load()
        except OnnxModelError as exc:
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "export-onnx" in proc.stdout and "torch" in proc.stdout


# -- devices ---------------------------------------------------------------------------------------


def test_providers_follow_the_device_setting() -> None:
    import onnxruntime as ort

    assert providers_for("cpu") == ["CPUExecutionProvider"]
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert providers_for("auto")[0] == (
        ("CUDAExecutionProvider", {"device_id": 0}) if has_cuda else "CPUExecutionProvider"
    )
    if not has_cuda:
        with pytest.raises(OnnxModelError, match="CUDA"):
            providers_for("cuda")
    with pytest.raises(OnnxModelError, match="unknown device"):
        providers_for("tpu")


def test_default_export_root_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # MEDIASEARCH_ONNX_CACHE is a setting, passed in by backends (tests/test_settings.py); only the
    # fallback is decided here.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_cache.default_export_root() == tmp_path / "xdg" / "mediasearch" / "onnx"


def test_only_old_staging_folders_are_swept(tmp_path: Path) -> None:
    final = tmp_path / "m.v1"
    old, fresh = tmp_path / ".m.v1.tmp-old", tmp_path / ".m.v1.tmp-new"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (0, 0))  # a killed exporter's leftover
    onnx_export._remove_stale_staging(final)
    assert not old.exists() and fresh.exists()  # a fresh one may be another process's live export
