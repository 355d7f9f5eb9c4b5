"""End to end over S3 (moto's server over HTTP): upload -> ingest (manifests, transform, load) -> /search.

Also the failure paths a user meets: zero-byte, truncated and non-image files, a key that does not
exist, a manifest line that is not JSON. Each becomes an error record, the CLI says how many failed
and exits non-zero, and every good image is indexed.
"""

from __future__ import annotations

import base64
import json

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mediasearch.cli import app as cli
from mediasearch.core.records import stable_id
from mediasearch.core.settings import Settings, get_settings
from mediasearch.query.api import create_app
from tests.conftest import COLOURS, image_bytes


@pytest.fixture
def env(s3_bucket: str, tiny_clip_dir, tmp_path, moto_endpoint: str):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for name, colour in COLOURS.items():
        s3.put_object(Bucket=s3_bucket, Key=f"photos/{name}.png", Body=image_bytes(colour))
    jpeg = image_bytes(COLOURS["red"], size=(120, 90), fmt="JPEG")
    s3.put_object(Bucket=s3_bucket, Key="photos/bad/zero.jpg", Body=b"")
    s3.put_object(Bucket=s3_bucket, Key="photos/bad/truncated.jpg", Body=jpeg[: len(jpeg) // 3])
    s3.put_object(Bucket=s3_bucket, Key="photos/bad/readme.png", Body=b"plain text, not a png")
    variables = {
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_STORE": f"s3://{s3_bucket}",
        "MEDIASEARCH_DEVICE": "cpu",
    }
    get_settings.cache_clear()
    yield s3, s3_bucket, variables
    get_settings.cache_clear()


def run(variables: dict[str, str], *args: str):
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args), env=variables)


def test_ingest_transform_load_search_over_s3(env) -> None:
    s3, bucket, variables = env
    result = run(variables, "ingest", f"s3://{bucket}/photos")
    assert result.exit_code == 1, result.output
    assert "3 of 9 items failed" in result.output
    assert "zero.jpg: empty file (0 bytes)" in result.output
    assert "readme.png: not a recognised image format" in result.output
    assert "truncated.jpg: cannot decode image" in result.output
    assert "indexed 6" in result.output

    # Manifests and outputs were written to S3 beside the media, as SageMaker would.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="photos/_mediasearch/")["Contents"]]
    assert any(k.endswith(".jsonl") for k in keys) and any(k.endswith(".jsonl.out") for k in keys)

    # Re-running is safe: nothing is embedded again, the count stays.
    again = run(variables, "ingest", f"s3://{bucket}/photos")
    assert "unchanged 6" in again.output and "index holds 6 documents" in again.output

    settings = Settings(
        store=f"s3://{bucket}",
        lancedb_uri=variables["MEDIASEARCH_LANCEDB_URI"],
        clip_model=variables["MEDIASEARCH_CLIP_MODEL"],
    )
    client = TestClient(create_app(settings))
    query = s3.get_object(Bucket=bucket, Key="photos/green.png")["Body"].read()
    response = client.post(
        "/search", json={"image": base64.b64encode(query).decode(), "k": 3, "kinds": ["image"]}
    )
    assert response.status_code == 200, response.text
    best = response.json()["results"][0]
    assert best["uri"] == f"s3://{bucket}/photos/green.png"
    assert best["id"] == stable_id(best["uri"])
    assert best["score"] == pytest.approx(1.0, abs=1e-3)
    assert "X-Amz-Signature" in best["url"]  # S3 media are presigned (SigV4), not proxied
    assert httpx.get(best["url"]).content == query

    by_uri = client.post("/search", json={"image_uri": f"s3://{bucket}/photos/blue.png", "k": 1}).json()
    assert by_uri["results"][0]["uri"] == f"s3://{bucket}/photos/blue.png"


def test_manifest_with_missing_key_and_bad_line(env) -> None:
    s3, bucket, variables = env
    good = {"id": "good", "uri": f"s3://{bucket}/photos/red.png", "kind": "image"}
    missing = {"id": "missing", "uri": f"s3://{bucket}/photos/does-not-exist.png", "kind": "image"}
    body = json.dumps(good) + "\n" + json.dumps(missing) + "\n" + "this line is not json\n"
    s3.put_object(Bucket=bucket, Key="manual/_mediasearch/manifests/batch.jsonl", Body=body.encode())

    result = run(variables, "transform", f"s3://{bucket}/manual")
    assert result.exit_code == 1
    assert "2 of 3 records failed" in result.output
    assert "does-not-exist.png does not exist" in result.output
    assert "manifest line 3 is not a valid record" in result.output
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="manual/_mediasearch/outputs/")["Contents"]
    (out_key,) = [o["Key"] for o in listed]
    assert out_key.endswith("/batch.jsonl.out")
    out = s3.get_object(Bucket=bucket, Key=out_key)["Body"].read().decode().splitlines()
    assert len(out) == 3 and json.loads(out[0])["clip"] and "error" in json.loads(out[1])

    loaded = run(variables, "load", f"s3://{bucket}/manual")
    assert "1 documents indexed, 2 error records" in loaded.output
    assert loaded.exit_code == 1
