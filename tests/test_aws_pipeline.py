"""transform -> (SageMaker's part, played here) -> load, over moto S3.

moto accepts the transform job but runs nothing, so `run_job_like_sagemaker` does what batch
transform does with the job moto describes: read the input (prefix or manifest file), split by line,
send the lines through model_handlers/clip (input_fn -> predict_fn -> output_fn) and write
`<manifest>.out` under the output path. The load step then runs for real, into a LanceDB index
standing in for OpenSearch (the OpenSearch backend has its own tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.storage import open_store, read_uri
from mediasearch.core.wire import parse_output_lines
from mediasearch.index.lancedb import LanceDBIndex
from tests.conftest import COLOURS, image_bytes
from tests.test_model_handler import load_handler_module

ROLE = "arn:aws:iam::123456789012:role/mediasearch-sagemaker"
runner = CliRunner()


@pytest.fixture
def env(moto_endpoint: str, app_env: None, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_endpoint


@pytest.fixture(scope="module")
def handler_module(tiny_clip_dir: Path):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDIASEARCH_DEVICE", "cpu")
    module = load_handler_module()
    model = module.model_fn(str(tiny_clip_dir))
    yield module, model
    mp.undo()


def run_job_like_sagemaker(endpoint: str, job_name: str, handler_module) -> list[str]:
    module, model = handler_module
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
    job = sm.describe_transform_job(TransformJobName=job_name)
    source = job["TransformInput"]["DataSource"]["S3DataSource"]
    assert job["TransformInput"]["SplitType"] == "Line" and job["BatchStrategy"] == "MultiRecord"
    if source["S3DataType"] == "ManifestFile":
        listing = json.loads(read_uri(source["S3Uri"]))
        prefix, inputs = listing[0]["prefix"], [prefix_rel for prefix_rel in listing[1:]]
    else:
        prefix = source["S3Uri"]
        store = open_store(prefix)
        inputs = [o.key for o in store.list()]
    out_store = open_store(job["TransformOutput"]["S3OutputPath"])
    written = []
    for rel in inputs:
        lines = read_uri(prefix + rel).decode().splitlines()
        # MultiRecord: as many lines per request as fit MaxPayloadInMB (all of them, at this size).
        body = ("\n".join(lines) + "\n").encode()
        assert len(body) < job["MaxPayloadInMB"] * 1024 * 1024
        data = module.input_fn(body, job["TransformInput"]["ContentType"])
        result, _ = module.output_fn(module.predict_fn(data, model), job["TransformOutput"]["Accept"])
        out_store.put(rel + ".out", result)
        written.append(rel + ".out")
    return written


def latest_job(endpoint: str) -> str:
    sm = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1")
    # Names end in a UTC timestamp, so the greatest is the newest (moto ignores SortOrder).
    return max(j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"])


def test_transform_then_load_from_s3_out_files(
    env: str, s3_bucket: str, tmp_path: Path, handler_module
) -> None:
    s3 = boto3.client("s3", endpoint_url=env, region_name="us-east-1")
    for name in ("red", "green", "blue", "yellow"):
        s3.put_object(Bucket=s3_bucket, Key=f"media/{name}.png", Body=image_bytes(COLOURS[name]))
    s3.put_object(Bucket=s3_bucket, Key="media/broken.png", Body=b"not an image")
    source = f"s3://{s3_bucket}/media"
    transform = ["aws", "transform", source, "--model-data", f"s3://{s3_bucket}/models/m.tar.gz"]
    transform += ["--role-arn", ROLE, "--no-load", "--poll-s", "0"]

    first = runner.invoke(app, transform)
    assert first.exit_code == 0, first.output
    assert "5 images, 5 to embed" in first.output
    outs = run_job_like_sagemaker(env, latest_job(env), handler_module)
    assert len(outs) == 1

    store = open_store(source)
    (out_key,) = [o.key for o in store.list("_mediasearch/outputs/")]
    results = parse_output_lines(store.get(out_key))
    assert len(results) == 5 and sum(r.ok for r in results) == 4

    model_data = ["--model-data", f"s3://{s3_bucket}/models/m.tar.gz"]
    loaded = runner.invoke(app, ["aws", "load", source, *model_data])
    # The broken image is reported and fails the command (exit 1), the others are indexed.
    assert loaded.exit_code == 1
    assert "1 output file(s), 4 documents indexed, 1 error records" in loaded.output
    assert "broken.png" in loaded.output
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    assert index.count() == 4

    again = runner.invoke(app, ["aws", "load", source, *model_data])
    assert "4 documents indexed" in again.output
    assert index.count() == 4  # idempotent: same ids, no duplicates

    # A new image: the incremental transform embeds only it (and the still-broken one, which the index
    # lacks), through a manifest file listing this run's one manifest; the earlier one is not looked at.
    s3.put_object(Bucket=s3_bucket, Key="media/white.png", Body=image_bytes(COLOURS["white"]))
    second = runner.invoke(app, transform)
    assert second.exit_code == 0, second.output
    assert "6 images, 2 to embed" in second.output
    assert "1 pending, 0 done" in second.output
    job = boto3.client("sagemaker", endpoint_url=env, region_name="us-east-1").describe_transform_job(
        TransformJobName=latest_job(env)
    )
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] == "ManifestFile"
    run_job_like_sagemaker(env, latest_job(env), handler_module)
    final = runner.invoke(app, ["aws", "load", source, *model_data])
    assert "2 output file(s), 5 documents indexed" in final.output
    assert LanceDBIndex(str(tmp_path / "lancedb"), "media").count() == 5
