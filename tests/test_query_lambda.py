"""query_lambda/handler.py driven by real API Gateway HTTP API (payload format 2.0) events.

The Lambda on AWS uses OpenSearch and the SageMaker endpoint; here the environment selects a LanceDB
index in tmp_path and the tiny in-process model, which exercises the same app, Mangum adapter and
settings-from-environment wiring.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from mediasearch import backends
from mediasearch.core.settings import Settings, get_settings
from mediasearch.core.storage import LocalStore
from mediasearch.indexing.pipeline import ingest
from tests.conftest import COLOURS, image_bytes

HANDLER = Path(__file__).resolve().parents[1] / "query_lambda" / "handler.py"


def http_api_event(method: str, path: str, body: dict | None = None, query: str = "") -> dict:
    """An HTTP API v2 event as API Gateway sends it to a Lambda proxy integration."""
    raw = json.dumps(body).encode() if body is not None else b""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": [],
        "headers": {
            "accept": "application/json",
            "content-type": "application/json",
            "content-length": str(len(raw)),
            "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0",
            "x-amzn-trace-id": "Root=1-67891233-abcdef012345678912345678",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "curl/8.5.0",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "10/Mar/2026:12:00:00 +0000",
            "timeEpoch": 1773144000000,
        },
        # API Gateway base64-encodes bodies it does not treat as text; the adapter must decode them.
        "body": base64.b64encode(raw).decode() if raw else None,
        "isBase64Encoded": bool(raw),
    }


CONTEXT = SimpleNamespace(
    function_name="mediasearch-query",
    aws_request_id="c6af9ac6-7b61-11e6-9a41-93e812345678",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:mediasearch-query",
    get_remaining_time_in_millis=lambda: 29_000,
)


@pytest.fixture(scope="module")
def lambda_module(tmp_path_factory, tiny_clip_dir: Path) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp("lambda")
    mp = pytest.MonkeyPatch()
    env = {
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_LANCEDB_URI": str(root / "lancedb"),
        "MEDIASEARCH_STORE": str(root / "media"),
        "MEDIASEARCH_DEVICE": "cpu",
    }
    for k, v in env.items():
        mp.setenv(k, v)
    store = LocalStore(root / "media")
    for name in ("red", "green", "blue"):
        store.put(f"{name}.png", image_bytes(COLOURS[name]))
    settings = Settings()
    ingest(store, backends.index(settings), backends.clip_handler(settings), progress=False)

    get_settings.cache_clear()  # the handler builds its app from the environment set above
    spec = importlib.util.spec_from_file_location("query_lambda_handler", HANDLER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    get_settings.cache_clear()
    mp.undo()


def test_health(lambda_module: ModuleType) -> None:
    response = lambda_module.handler(http_api_event("GET", "/health"), CONTEXT)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"].startswith("application/json")
    body = json.loads(response["body"])
    assert body["status"] == "ok" and body["documents"] == 3


def test_search(lambda_module: ModuleType) -> None:
    event = http_api_event("POST", "/search", {"text": "a red square", "k": 2, "kinds": ["image"]})
    response = lambda_module.handler(event, CONTEXT)
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert len(body["results"]) == 2
    assert all(-1.0 <= r["score"] <= 1.0 and r["kind"] == "image" for r in body["results"])
    assert "took_ms" in body


def test_bad_input_is_a_json_4xx(lambda_module: ModuleType) -> None:
    response = lambda_module.handler(http_api_event("POST", "/search", {"k": 0}), CONTEXT)
    assert 400 <= response["statusCode"] < 500
    assert "error" in json.loads(response["body"])


# What the Lambda image leaves out (query_lambda/requirements.txt): the model stack, the embedded
# index and the video and CLI libraries.
NOT_IN_LAMBDA_IMAGE = {
    "torch",
    "transformers",
    "lancedb",
    "pyarrow",
    "av",
    "scenedetect",
    "cv2",
    "typer",
    "uvicorn",
}

AWS_ENV = {
    "PATH": "/usr/bin:/bin",
    # The Lambda runtime sets both region variables.
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "MEDIASEARCH_INDEX_BACKEND": "opensearch",
    "MEDIASEARCH_OPENSEARCH_URL": "https://search-mediasearch-abc.us-east-1.es.amazonaws.com",
    "MEDIASEARCH_OPENSEARCH_AWS_REGION": "us-east-1",
    "MEDIASEARCH_ENCODER_BACKEND": "sagemaker",
    "MEDIASEARCH_SAGEMAKER_ENDPOINT": "mediasearch-clip",
    "MEDIASEARCH_STORE": "s3://bucket/media",
}


def test_lambda_image_dependencies_are_enough_on_aws_settings() -> None:
    """With the AWS settings (OpenSearch over SigV4, SageMaker encoder) the handler imports and builds
    its app with everything the image leaves out unimportable, and caption mode, which needs the local
    text embedder, answers 501 with the reason instead of failing."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, json, sys
        BLOCKED = {sorted(NOT_IN_LAMBDA_IMAGE)!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(name + " is not in the Lambda image", name=name)
        sys.meta_path.insert(0, Block())
        spec = importlib.util.spec_from_file_location("handler", {str(HANDLER)!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        service = module.handler.app.state.service
        # Behind the serving view: the collection's index (an alias once generations exist) and the
        # encoder pinned to the endpoint.
        view = service.index.view
        print(type(view.fallback_index).__name__, type(view.pinned).__name__)
        event = json.loads(sys.argv[1])
        context = type("Context", (), {{"get_remaining_time_in_millis": lambda self: 29_000}})()
        print(json.dumps(module.handler(event, context)))
        """
    )
    event = http_api_event("POST", "/search", {"text": "a red square", "mode": "caption"})
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(event)],
        capture_output=True,
        text=True,
        env=AWS_ENV,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    names, response_line = proc.stdout.strip().split("\n")[-2:]
    assert names.split() == ["OpenSearchIndex", "SageMakerEncoder"]
    response = json.loads(response_line)
    assert response["statusCode"] == 501, response
    body = json.loads(response["body"])
    assert body["detail"] == {"field": "mode"}
    assert "caption search is not available" in body["error"] and "'torch' is not installed" in body["error"]


def test_lambda_requirements_and_image_carry_no_model_stack() -> None:
    import re

    root = HANDLER.parents[1]
    lines = (root / "query_lambda" / "requirements.txt").read_text().splitlines()
    names = {m.group().lower() for line in lines if (m := re.match(r"[A-Za-z0-9_.-]+", line))}
    assert "fastapi" in names and not names & NOT_IN_LAMBDA_IMAGE
    dockerfile = (root / "docker" / "lambda.Dockerfile").read_text()
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in instructions if "torch" in line or "download.pytorch.org" in line]
