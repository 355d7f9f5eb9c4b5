"""Schemathesis with every check it has: no 5xx, and every response as the OpenAPI document says.

`test_fuzz_api.py` only asks for "no 5xx". This runs all of schemathesis' checks on every operation,
positive and negative data alike: status codes, content types, headers and bodies must be the
documented ones; invalid data must be refused and valid data accepted; a method an operation does
not have answers 405 with `Allow`; and with an API key configured, the key must be enforced.

One setting differs from schemathesis' defaults, and only for positive data: a 400 counts as an
answer. The schema says what a well-formed request is, not which base64 is a decodable image or which
`image_uri` names an object (the service answers those 400, naming the field), and no schema can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from mediasearch.core.settings import Settings  # noqa: E402
from mediasearch.query.api import create_app  # noqa: E402
from mediasearch.query.encoder import LocalEncoder  # noqa: E402
from mediasearch.query.links import MediaLinks  # noqa: E402
from mediasearch.query.search import SearchService  # noqa: E402
from tests.conftest import small_corpus  # noqa: E402

KEY = "schemathesis-key"
AUTH = {"x-api-key": KEY}

CONFIG = SchemathesisConfig.from_str(
    """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "400", "401", "403", "404", "409", "429"]
"""
)


class HashingTextEmbedder:
    """Caption mode without a model: a fixed random vector per text (the ranking is not the point)."""

    dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(self.dim) for t in texts]
        out = np.asarray(rows, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, clip_model):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("schemathesis")
    store, index = small_corpus(root, clip_model)
    service = SearchService(
        index, LocalEncoder(clip_model), store, MediaLinks(), text_embedder=HashingTextEmbedder()
    )
    return create_app(
        Settings(store=str(store.root), api_key=KEY, max_request_bytes=64 * 1024), service=service
    )


# Built at collection time from an app with no service (the document does not depend on it), with
# the key configured so that the document declares the key's security scheme.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(api_key=KEY), service=cast(SearchService, object())).openapi(), config=CONFIG
)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_every_check_passes(case: Any, app: Any) -> None:
    # As `from_asgi` would have it: the checks' own requests (the auth probes) go through ASGI too.
    case.operation.schema.app = app
    response = case.call(app=app, headers=AUTH)
    # The checks that send requests of their own (the auth probes) send them to the same app.
    case.validate_response(response, headers=AUTH, transport_kwargs={"app": app, "headers": AUTH})
    assert "Traceback" not in response.text


def test_the_schemas_not_blank_is_the_validators() -> None:
    """What the OpenAPI document calls a non-blank text is what the service accepts: a "\\u001c" that
    JSON Schema's \\S let through was refused with a 422 (schemathesis found it)."""
    import re
    import sys

    from mediasearch.core.records import NOT_BLANK_PATTERN, refuse_blank

    pattern = re.compile(NOT_BLANK_PATTERN)
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        try:
            refuse_blank(char)
            accepted = True
        except ValueError:
            accepted = False
        assert (pattern.search(char) is not None) == accepted, hex(code)
