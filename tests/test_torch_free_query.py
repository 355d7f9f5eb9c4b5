"""The query side is torch-free: with the SageMaker encoder and OpenSearch, the API and the query
Lambda's handler import no model stack, no embedded index and no video libraries, even where they are
installed (as here). A fresh interpreter per check, since this one has long imported them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "lancedb", "av", "cv2", "scenedetect"]

AWS_ENV = {
    "PATH": "/usr/bin:/bin",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "HF_HUB_OFFLINE": "1",
    "MEDIASEARCH_INDEX_BACKEND": "opensearch",
    "MEDIASEARCH_OPENSEARCH_URL": "https://search-mediasearch-abc.us-east-1.es.amazonaws.com",
    "MEDIASEARCH_OPENSEARCH_AWS_REGION": "us-east-1",
    "MEDIASEARCH_ENCODER_BACKEND": "sagemaker",
    "MEDIASEARCH_SAGEMAKER_ENDPOINT": "x",
    "MEDIASEARCH_STORE": "s3://bucket/media",
}


def loaded_after(code: str) -> dict[str, list[str]]:
    """Runs `code` in a fresh interpreter; which of HEAVY were imported at each `report(label)`."""
    script = (
        textwrap.dedent(
            f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        seen = {{}}
        def report(label):
            seen[label] = sorted({{n.split(".")[0] for n in sys.modules}} & set({HEAVY!r}))
        """
        )
        + textwrap.dedent(code)
        + "\nprint(json.dumps(seen))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=AWS_ENV, cwd=ROOT, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_api_and_lambda_handler_load_no_model_stack_with_the_sagemaker_encoder() -> None:
    seen = loaded_after(
        """
        import mediasearch.query.api
        report("import api")
        app = mediasearch.query.api.create_app()
        # The service follows the serving generation; its encoder is pinned to the endpoint.
        assert type(app.state.service.encoder.view.pinned).__name__ == "SageMakerEncoder"
        report("create_app")
        import query_lambda.handler
        report("lambda handler")
        # The check can fail: building the local encoder on the torch engine does import torch.
        from mediasearch import backends
        from mediasearch.core.settings import Settings
        backends.encoder(Settings(encoder_backend="local", clip_engine="torch"))
        report("local encoder")
        """
    )
    assert seen["import api"] == seen["create_app"] == seen["lambda handler"] == []
    assert "torch" in seen["local encoder"]


def test_search_service_and_model_load_error_are_importable_without_torch() -> None:
    seen = loaded_after(
        """
        from mediasearch.core.errors import ModelLoadError
        from mediasearch.query.search import SearchService
        from mediasearch.query.encoder import LazyTextEmbedder, SageMakerEncoder
        report("query side")
        from mediasearch.models.base import ModelLoadError as FromModels
        assert FromModels is ModelLoadError  # one class: the service catches what the models raise
        report("models")
        """
    )
    assert seen["query side"] == []
    assert "torch" in seen["models"]
