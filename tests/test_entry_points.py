"""Every entry point takes its options from the settings: one MEDIASEARCH_* variable per test, set to a
value other than its default, and its effect seen from outside.

The entry points: `mediasearch ingest | preprocess | transform | load | search | serve` (in-process, as
a user runs them), `jobs/*.py` (run by path in subprocesses, as a scheduler runs them), the SageMaker
handler scripts (loaded by path, `model_fn` as the container calls it) and `mediasearch aws transform |
load` (against moto).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mediasearch import backends
from mediasearch.aws.batch import output_tag
from mediasearch.cli import app
from mediasearch.core.images import MAX_IMAGE_PIXELS
from mediasearch.core.layout import WorkLayout
from mediasearch.core.records import (
    DocKind,
    IndexDocument,
    MediaKind,
    SceneSpan,
    TransformResult,
    VideoRecord,
    stable_id,
)
from mediasearch.core.settings import Settings, get_settings
from mediasearch.core.storage import LocalStore, ObjectStore, S3Store
from mediasearch.core.wire import dumps_results
from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import BadRequest
from mediasearch.models.random_init import build_random_captioner, build_random_text_embedder
from tests.conftest import COLOURS, image_bytes, serving_index
from tests.test_model_handler import load_handler_module

ROOT = Path(__file__).resolve().parents[1]
WORK = WorkLayout("_mediasearch")
ROLE = "arn:aws:iam::123456789012:role/mediasearch-sagemaker"
# Frame captions of the hand-written video below: red, ball and "red ball" are on three frames, dog and
# grass on two.
CAPTIONS = ["a red ball on the grass", "a red ball near a dog", "a dog on the grass", "a red ball"]


# -- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_bytes() -> bytes:
    """A small video of two 2-second shots (cut at 2 s)."""
    data, _ = render_video(VideoSpec("clip.mp4", 96, 64, 10, scenes_cycle([2.0, 2.0])))
    return data


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_text_embedder(tmp_path_factory.mktemp("text") / "bert")


@pytest.fixture
def base_env(tmp_path: Path, tiny_clip_dir: Path) -> dict[str, str]:
    """What every run here shares: the tiny CLIP, a private LanceDB, no downloads."""
    return {
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def cli(env: dict[str, str], *args: str):  # -> click.testing.Result
    # Settings are read once per process and cached; each invocation here is a fresh "process".
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()


def run_job(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "jobs" / name), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def put_images(store: ObjectStore, names: list[str]) -> None:
    for name in names:
        store.put(f"{name}.png", image_bytes(COLOURS[name]))


def write_captioned_video(store: ObjectStore, tag: str) -> str:
    """A preprocessed video as the loader finds it, by hand: a sidecar and the frame outputs of the model
    `tag`, with captions. Returns the video's id. The video object exists (its bytes are never
    decoded here): the loader loads only what the source holds at the sidecar's fingerprint."""
    store.put("clip.mp4", b"a video the loader never opens")
    info = store.stat("clip.mp4")
    assert info is not None
    fingerprint = info.fingerprint
    uri = store.uri("clip.mp4")
    vid = stable_id(uri)
    record = VideoRecord(
        video_id=vid,
        uri=uri,
        fingerprint=fingerprint,
        duration=4.0,
        scenes=[
            SceneSpan(scene=0, t_start=0.0, t_end=2.0, frames=[0.5, 1.5]),
            SceneSpan(scene=1, t_start=2.0, t_end=4.0, frames=[2.5, 3.5]),
        ],
    )
    store.put(WORK.sidecar(vid), record.model_dump_json().encode())
    rng = np.random.default_rng(0)
    frames = []
    for n, (t, caption) in enumerate(zip([0.5, 1.5, 2.5, 3.5], CAPTIONS, strict=True)):
        vector = rng.normal(size=16).astype(np.float32)
        frames.append(
            TransformResult(
                id=f"{vid}-{n}",
                uri=store.uri(f"_mediasearch/frames/{vid}/{n}.jpg"),
                kind=MediaKind.FRAME,
                video_id=vid,
                scene=0 if t < 2 else 1,
                t=t,
                fingerprint=fingerprint,
                clip=vector / np.linalg.norm(vector),
                model="tiny",
                caption=caption,
                width=96,
                height=64,
            )
        )
    manifest = WORK.frame_manifest(vid, fingerprint)
    store.put(WORK.output(manifest, tag), dumps_results(frames))
    return vid


def local_tag(tiny_clip_dir: Path) -> str:
    """The output folder `mediasearch load` reads with the tiny CLIP configured."""
    settings = Settings(_env_file=None, clip_model=str(tiny_clip_dir), device="cpu")
    return backends.clip_handler(settings, captions=False).output_tag


def video_document(lancedb: Path, collection: str, vid: str) -> IndexDocument:
    # Loads write the serving generation of the collection (its own table when the model is unknown).
    (doc,) = serving_index(lancedb, collection).get_many_with_vectors([vid])
    assert doc.kind is DocKind.VIDEO
    return doc


# -- mediasearch ... -------------------------------------------------------------------------------


def test_ingest_takes_manifest_lines(tmp_path: Path, base_env: dict[str, str]) -> None:
    store = LocalStore(tmp_path / "media")
    put_images(store, ["red", "green", "blue"])
    done = cli({**base_env, "MEDIASEARCH_MANIFEST_LINES": "2"}, "ingest", str(store.root))
    assert done.exit_code == 0, done.output
    assert "scanned 3, unchanged 0, embedded 3, indexed 3" in done.output
    manifests = [o.key for o in store.list(WORK.manifests_dir)]
    assert len(manifests) == 2  # 2 + 1 lines; the default of 1000 lines makes one


def test_preprocess_takes_frames_per_scene(
    tmp_path: Path, base_env: dict[str, str], video_bytes: bytes
) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("clip.mp4", video_bytes)
    done = cli({**base_env, "MEDIASEARCH_FRAMES_PER_SCENE": "1"}, "preprocess", str(store.root))
    assert done.exit_code == 0, done.output
    record = VideoRecord.model_validate_json(store.get(WORK.sidecar(stable_id(store.uri("clip.mp4")))))
    assert len(record.scenes) == 2
    assert [len(s.frames) for s in record.scenes] == [1, 1]  # 3 by default


def test_transform_takes_the_pixel_limit(tmp_path: Path, base_env: dict[str, str]) -> None:
    from mediasearch.indexing.manifests import scan_images, write_manifests

    store = LocalStore(tmp_path / "media")
    put_images(store, ["red", "green"])  # 64 x 48 = 3072 pixels each
    write_manifests(store, WORK, scan_images(store, "", WORK))
    done = cli({**base_env, "MEDIASEARCH_MAX_IMAGE_PIXELS": "1024"}, "transform", str(store.root))
    assert done.exit_code == 1
    assert "1 manifest(s) run, 0 already done, 2 records, 2 failed" in done.output
    assert "more than the limit of 1024" in done.output


def test_load_takes_the_text_embedder_and_tag_options(
    tmp_path: Path, base_env: dict[str, str], tiny_clip_dir: Path, text_model: Path
) -> None:
    store = LocalStore(tmp_path / "media")
    vid = write_captioned_video(store, local_tag(tiny_clip_dir))
    env = {**base_env, "MEDIASEARCH_TAGS_TOP_N": "1", "MEDIASEARCH_TEXT_MODEL": str(text_model)}
    done = cli(env, "load", str(store.root))
    assert done.exit_code == 0, done.output
    assert "1 output file(s), 3 documents indexed, 0 error records" in done.output
    video = video_document(tmp_path / "lancedb", "media", vid)
    assert len(video.tags) == 1  # five tags are on two frames or more, and the default keeps 10
    assert video.caption_vector is not None  # the text embedder the settings name (tiny BERT) ran


def test_search_takes_the_collection(tmp_path: Path, base_env: dict[str, str]) -> None:
    store = LocalStore(tmp_path / "media")
    put_images(store, ["red", "blue"])
    other = {**base_env, "MEDIASEARCH_COLLECTION": "other"}
    assert cli(other, "ingest", str(store.root)).exit_code == 0
    found = cli(other, "search", "a red square", "--kind", "image", "--json")
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)["results"]) == 2
    # The default collection was never written: the variable is what pointed the search elsewhere
    # (and a search of a collection that does not exist says so).
    missing = cli(base_env, "search", "a red square", "--kind", "image")
    assert missing.exit_code == 1 and "no index at" in missing.output and "/media" in missing.output


def test_serve_builds_the_app_from_the_settings(
    base_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    import importlib

    import uvicorn

    from mediasearch.index.base import IndexSpec

    started: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: started.update(target=target, **kwargs))
    # serve refuses to start without an index to read (a read never creates one): an empty collection.
    LanceDBIndex(base_env["MEDIASEARCH_LANCEDB_URI"], "media").create(IndexSpec(clip_dim=16))
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        env = {**base_env, "MEDIASEARCH_API_KEY": "s3cret", "MEDIASEARCH_LOG_LEVEL": "ERROR"}
        done = CliRunner().invoke(app, ["serve", "--port", "8123"], env=env)
        assert done.exit_code == 0, done.output
        assert root.level == logging.ERROR
        assert started["factory"] is True and started["port"] == 8123
        # What uvicorn would do with the target: import it and call the factory in the served process.
        module, _, name = str(started["target"]).partition(":")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        client = TestClient(getattr(importlib.import_module(module), name)())
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
    assert client.get("/health").status_code == 200
    assert client.post("/search", json={"text": "a red square"}).status_code == 401
    assert client.post("/search", json={"text": "x"}, headers={"x-api-key": "nope"}).status_code == 401


@pytest.mark.parametrize(
    "args",
    [
        ["aws", "transform", "/not/a/bucket", "--model-data", "s3://b/m.tar.gz", "--role-arn", ROLE],
        ["aws", "load", "s3://bucket/media"],  # no --model-data and no stack to read it from
        ["aws", "deploy", "--param", "oops"],
        ["random-model", "model", "--size", "huge"],
    ],
)
def test_a_cli_mistake_prints_one_line_and_exits_2(args: list[str], base_env: dict[str, str]) -> None:
    done = cli(base_env, *args)
    assert done.exit_code == 2
    assert len(done.output.strip().splitlines()) == 1 and done.output.startswith("error: ")


# -- jobs/*.py, by path ------------------------------------------------------------------------------


def test_preprocess_job_takes_the_store_and_frames_per_scene(
    tmp_path: Path, base_env: dict[str, str], video_bytes: bytes
) -> None:
    store = LocalStore(tmp_path / "media")
    store.put("clip.mp4", video_bytes)
    env = {**base_env, "MEDIASEARCH_STORE": str(store.root), "MEDIASEARCH_FRAMES_PER_SCENE": "1"}
    done = run_job("preprocess.py", env, "--no-progress")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["processed"] == 1
    lines = [ln for k in summary["manifests"] for ln in store.get(k).decode().splitlines() if ln]
    assert len(lines) == 2  # one frame for each of the two scenes


def test_preprocess_job_defaults_are_the_settings(base_env: dict[str, str]) -> None:
    env = {
        **base_env,
        "MEDIASEARCH_VIDEO_WORKERS": "3",
        "MEDIASEARCH_DECODE_WORKERS": "5",  # the transform's threads: not what preprocessing runs on
        "MEDIASEARCH_SCENE_THRESHOLD": "11.5",
        "MEDIASEARCH_MAX_SCENE_S": "4.0",
    }
    done = run_job("preprocess.py", env, "--help")
    assert done.returncode == 0, done.stderr
    usage = " ".join(done.stdout.split())
    assert "--workers WORKERS videos processed at once" in usage and "(default: 3)" in usage
    assert "--threshold THRESHOLD ContentDetector threshold (default: 11.5)" in usage
    assert "--max-scene-s MAX_SCENE_S longer shots are split into windows (default: 4.0)" in usage


def test_ingest_job_takes_manifest_lines(tmp_path: Path, base_env: dict[str, str]) -> None:
    store = LocalStore(tmp_path / "media")
    put_images(store, ["red", "green", "blue"])
    done = run_job("ingest.py", {**base_env, "MEDIASEARCH_MANIFEST_LINES": "1"}, str(store.root))
    assert done.returncode == 0, done.stderr
    assert "embedded 3, indexed 3" in done.stdout
    assert len([o.key for o in store.list(WORK.manifests_dir)]) == 3


def test_transform_job_takes_the_pixel_limit(tmp_path: Path, base_env: dict[str, str]) -> None:
    from mediasearch.indexing.manifests import scan_images, write_manifests

    store = LocalStore(tmp_path / "media")
    put_images(store, ["red"])
    write_manifests(store, WORK, scan_images(store, "", WORK))
    done = run_job("transform.py", {**base_env, "MEDIASEARCH_MAX_IMAGE_PIXELS": "1024"}, str(store.root))
    assert done.returncode == 1
    assert "1 records, 1 failed" in done.stdout and "more than the limit of 1024" in done.stderr


def test_load_job_takes_the_collection_and_tag_options(
    tmp_path: Path, base_env: dict[str, str], tiny_clip_dir: Path, text_model: Path
) -> None:
    store = LocalStore(tmp_path / "media")
    vid = write_captioned_video(store, local_tag(tiny_clip_dir))
    env = {
        **base_env,
        "MEDIASEARCH_COLLECTION": "videos",
        "MEDIASEARCH_TAGS_MIN_FRAMES": "3",
        "MEDIASEARCH_TEXT_MODEL": str(text_model),
    }
    done = run_job("load.py", env, str(store.root))
    assert done.returncode == 0, done.stderr
    # Only red, ball and "red ball" are on three frames; the default minimum of two keeps dog and grass too.
    assert sorted(video_document(tmp_path / "lancedb", "videos", vid).tags) == ["ball", "red", "red ball"]


# -- the SageMaker handler scripts, by path -----------------------------------------------------------


def test_clip_handler_takes_batch_size_and_pixel_limit(
    tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIASEARCH_DEVICE", "cpu")
    monkeypatch.setenv("MEDIASEARCH_BATCH_SIZE", "5")
    monkeypatch.setenv("MEDIASEARCH_MAX_IMAGE_PIXELS", "1024")
    module = load_handler_module()
    handler = module.model_fn(str(tiny_clip_dir))
    assert handler.model.batch_size == 5  # 32 by default
    with pytest.raises(BadRequest, match="more than the limit of 1024"):
        module.input_fn(image_bytes(COLOURS["red"]), "application/x-image")


def test_captioning_handler_takes_caption_options_and_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = build_random_captioner(tmp_path / "captioner", size="tiny")
    monkeypatch.setenv("MEDIASEARCH_DEVICE", "cpu")
    monkeypatch.setenv("MEDIASEARCH_CAPTION_BEAMS", "2")
    monkeypatch.setenv("MEDIASEARCH_MAX_IMAGE_PIXELS", "1024")
    module = load_handler_module(ROOT / "model_handlers" / "captioning" / "inference.py")
    handler = module.model_fn(str(weights))
    assert handler.model is None and handler.captioner.num_beams == 2  # 1 by default
    assert handler.max_pixels == 1024
    with pytest.raises(BadRequest, match="more than the limit of 1024"):
        module.input_fn(image_bytes(COLOURS["red"]), "application/x-image")


# -- mediasearch aws transform | load, against moto ----------------------------------------------------


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_endpoint


def last_model_environment(endpoint: str, collection: str) -> dict[str, str]:
    """The environment of the model that the newest job of `collection` ran (jobs are named after it)."""
    smc = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
    names = [j["TransformJobName"] for j in smc.list_transform_jobs()["TransformJobSummaries"]]
    newest = max(n for n in names if n.startswith(f"mediasearch-{collection}-"))
    job = smc.describe_transform_job(TransformJobName=newest)
    return smc.describe_model(ModelName=job["ModelName"])["PrimaryContainer"]["Environment"]


def test_aws_transform_takes_the_instance_settings_and_manifest_lines(
    aws: str, s3_bucket: str, base_env: dict[str, str]
) -> None:
    store = S3Store(s3_bucket, "media")
    put_images(store, ["red", "green", "blue"])
    env = {
        **base_env,
        "MEDIASEARCH_SAGEMAKER_BATCH_SIZE": "16",
        "MEDIASEARCH_SAGEMAKER_DECODE_WORKERS": "3",
        "MEDIASEARCH_MAX_IMAGE_PIXELS": "2048",
        "MEDIASEARCH_MANIFEST_LINES": "2",
        "MEDIASEARCH_COLLECTION": "instance",
    }
    args = ["aws", "transform", f"s3://{s3_bucket}/media", "--model-data", f"s3://{s3_bucket}/m.tar.gz"]
    done = cli(env, *args, "--role-arn", ROLE, "--no-incremental", "--no-load", "--poll-s", "0")
    assert done.exit_code == 0, done.output
    assert "manifests: 2 pending, 0 done" in done.output
    environment = last_model_environment(aws, "instance")
    assert environment["MEDIASEARCH_BATCH_SIZE"] == "16"
    assert environment["MEDIASEARCH_DECODE_WORKERS"] == "3"
    assert environment["MEDIASEARCH_MAX_IMAGE_PIXELS"] == "2048"


def test_aws_transform_defaults_to_the_settings_defaults(
    aws: str, s3_bucket: str, base_env: dict[str, str]
) -> None:
    store = S3Store(s3_bucket, "media")
    put_images(store, ["red"])
    args = ["aws", "transform", f"s3://{s3_bucket}/media", "--model-data", f"s3://{s3_bucket}/m.tar.gz"]
    env = {**base_env, "MEDIASEARCH_COLLECTION": "defaults"}
    done = cli(env, *args, "--role-arn", ROLE, "--no-incremental", "--no-load", "--poll-s", "0")
    assert done.exit_code == 0, done.output
    environment = last_model_environment(aws, "defaults")
    defaults = Settings(_env_file=None)
    assert environment["MEDIASEARCH_BATCH_SIZE"] == str(defaults.sagemaker_batch_size)
    assert environment["MEDIASEARCH_DECODE_WORKERS"] == str(defaults.sagemaker_decode_workers)
    assert environment["MEDIASEARCH_MAX_IMAGE_PIXELS"] == str(MAX_IMAGE_PIXELS)


def test_aws_load_loads_like_the_local_load(
    aws: str,
    s3_bucket: str,
    tmp_path: Path,
    base_env: dict[str, str],
    tiny_clip_dir: Path,
    text_model: Path,
) -> None:
    """The same outputs, loaded by `aws load` and by `mediasearch load`: the same captions, tags and
    caption vectors (AWS loads used to get neither the text embedder nor the tag options)."""
    model_data = f"s3://{s3_bucket}/models/m.tar.gz"
    s3 = S3Store(s3_bucket, "media")
    local = LocalStore(tmp_path / "media")
    vid = write_captioned_video(s3, output_tag(model_data))
    assert write_captioned_video(local, local_tag(tiny_clip_dir)) != vid  # different URIs, different ids
    env = {**base_env, "MEDIASEARCH_TAGS_TOP_N": "1", "MEDIASEARCH_TEXT_MODEL": str(text_model)}

    source = f"s3://{s3_bucket}/media"
    on_aws = cli({**env, "MEDIASEARCH_COLLECTION": "aws"}, "aws", "load", source, "--model-data", model_data)
    assert on_aws.exit_code == 0, on_aws.output
    assert "1 output file(s), 3 documents indexed, 0 error records" in on_aws.output
    here = cli({**env, "MEDIASEARCH_COLLECTION": "here"}, "load", str(local.root))
    assert here.exit_code == 0, here.output

    aws_doc = video_document(tmp_path / "lancedb", "aws", vid)
    local_doc = video_document(tmp_path / "lancedb", "here", stable_id(local.uri("clip.mp4")))
    assert len(aws_doc.tags) == 1 and aws_doc.tags == local_doc.tags
    assert aws_doc.caption == local_doc.caption
    assert aws_doc.caption_vector is not None and local_doc.caption_vector is not None
    assert np.allclose(aws_doc.caption_vector, local_doc.caption_vector)


def test_sagemaker_transform_job_takes_the_instance_batch_size(
    aws: str, s3_bucket: str, base_env: dict[str, str]
) -> None:
    store = S3Store(s3_bucket, "media")
    put_images(store, ["red"])
    env = {**base_env, "MEDIASEARCH_SAGEMAKER_BATCH_SIZE": "24", "MEDIASEARCH_COLLECTION": "job"}
    args = [f"s3://{s3_bucket}/media", "--model-data", f"s3://{s3_bucket}/m.tar.gz", "--role-arn", ROLE]
    done = run_job("sagemaker_transform.py", env, *args, "--no-incremental", "--no-load", "--poll-s", "0")
    assert done.returncode == 0, done.stderr
    assert last_model_environment(aws, "job")["MEDIASEARCH_BATCH_SIZE"] == "24"
