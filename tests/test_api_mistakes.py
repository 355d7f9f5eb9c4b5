"""Caller input that used to give a 500, and the API contract as documented, through HTTP (issue 11).

Every case goes through the real app (`create_app`) over a small LanceDB index built with the tiny
random CLIP; each error must be JSON `{error, detail}` with a 4xx (or a 503 for the server's own
state), never a 500 or a trace.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mediasearch.core.errors import ModelLoadError
from mediasearch.core.records import stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore, StoreError, open_store, open_uri
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import COLOURS, image_bytes


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, clip_model) -> tuple[LocalStore, SearchService]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("mistakes")
    store = LocalStore(root / "media")
    for name, colour in COLOURS.items():
        store.put(f"photos/{name}.png", image_bytes(colour))
    store.put("photos/with space.png", image_bytes((120, 60, 200)))
    index = LanceDBIndex(str(root / "lancedb"), "media")
    ingest(store, index, ClipHandler(clip_model), progress=False)
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return store, service


def client_for(env: tuple[LocalStore, SearchService], **settings: Any) -> TestClient:
    store, service = env
    return TestClient(create_app(Settings(store=str(store.root), **settings), service=service))


@pytest.fixture(scope="module")
def client(env: tuple[LocalStore, SearchService]) -> TestClient:
    return client_for(env)


def json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"}, body
    assert "Traceback" not in response.text
    return body


def fields_of(body: dict[str, Any]) -> list[str]:
    detail = body["detail"]
    return [d["field"] for d in detail] if isinstance(detail, list) else [detail["field"]]


def png(mode: str, size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---- item 10: input that used to give a 500 ----------------------------------------------------------


@pytest.mark.parametrize("name", ["min_width", "min_height"])
def test_a_size_filter_past_32_bits_is_a_422(client: TestClient, name: str) -> None:
    body = json_error(client.post("/search", json={"text": "a", "filters": {name: 2**31}}), 422)
    assert fields_of(body) == [f"filters.{name}"]
    assert "less than or equal to 2147483647" in body["detail"][0]["message"]


def test_the_largest_size_filter_is_answered(client: TestClient) -> None:
    r = client.post("/search", json={"text": "a", "kinds": ["image"], "filters": {"min_width": 2**31 - 1}})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == []


@pytest.mark.parametrize("suffix", ["photos/red.png%00.png", "photos/%00", "%00"])
def test_an_image_uri_with_a_nul_byte_is_a_400(
    env: tuple[LocalStore, SearchService], client: TestClient, suffix: str
) -> None:
    store, _ = env
    body = json_error(client.post("/search", json={"image_uri": f"{store.root_uri}/{suffix}"}), 400)
    assert fields_of(body) == ["image_uri"] and "inside the store" in body["error"]


def test_an_image_uri_with_an_overlong_name_is_a_4xx(
    env: tuple[LocalStore, SearchService], client: TestClient
) -> None:
    store, _ = env
    uri = f"{store.root_uri}/photos/{'n' * 300}.png"
    body = json_error(client.post("/search", json={"image_uri": uri}), 404)
    assert fields_of(body) == ["image_uri"]


def test_an_image_uri_of_another_host_is_refused(
    env: tuple[LocalStore, SearchService], client: TestClient
) -> None:
    store, _ = env
    # The same path as a real object, on another host: the host must not be ignored.
    uri = store.root_uri.replace("file://", "file://other-host") + "/photos/red.png"
    body = json_error(client.post("/search", json={"image_uri": uri}), 400)
    assert fields_of(body) == ["image_uri"]
    localhost = store.root_uri.replace("file://", "file://localhost") + "/photos/red.png"
    assert client.post("/search", json={"image_uri": localhost, "kinds": ["image"]}).status_code == 200


def test_an_image_uri_with_an_escaped_space_finds_the_file(
    env: tuple[LocalStore, SearchService], client: TestClient
) -> None:
    store, _ = env
    r = client.post(
        "/search", json={"image_uri": store.uri("photos/with space.png"), "kinds": ["image"], "k": 1}
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["id"] == stable_id(store.uri("photos/with space.png"))


def test_other_hosts_are_refused_as_store_locations_too() -> None:
    with pytest.raises(StoreError, match="must name a path on this machine"):
        open_store("file://other-host/data")
    with pytest.raises(StoreError, match="must name a path on this machine"):
        open_uri("file://other-host/data/a.png")
    assert open_store("file://localhost/tmp").root_uri == "file:///tmp"


def test_a_40_megapixel_strip_is_a_400_not_a_memory_error(client: TestClient) -> None:
    body = json_error(client.post("/search", json={"image": png("1", (40_000_000, 1))}), 400)
    assert fields_of(body) == ["image"] and "differ by more than 20:1" in body["error"]


# ---- item 11 through HTTP: shapes that cost too much are refused, large ones are reduced -----------------


def test_a_thin_png_is_refused_at_once(client: TestClient) -> None:
    body = json_error(client.post("/search", json={"image": png("1", (1, 40_000))}), 400)
    assert "differ by more than" in body["error"]


def test_a_large_one_bit_png_is_answered(client: TestClient) -> None:
    r = client.post("/search", json={"image": png("1", (6000, 6000)), "kinds": ["image"], "k": 1})
    assert r.status_code == 200, r.text


def test_an_rgb_png_over_the_decode_budget_says_why(client: TestClient) -> None:
    body = json_error(client.post("/search", json={"image": png("RGB", (4500, 4500))}), 400)
    assert "MiB to decode" in body["error"] and "JPEG" in body["error"]


# ---- item 12: the contract ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/search", {"POST"}),
        ("GET", "/search", {"POST"}),
        ("PUT", "/items/abc", {"GET"}),
        ("POST", "/videos/abc/similar", {"GET"}),
    ],
)
def test_405_keeps_its_allow_header(client: TestClient, method: str, path: str, allowed: set[str]) -> None:
    r = client.request(method, path)
    json_error(r, 405)
    assert {m.strip() for m in r.headers["allow"].split(",")} == allowed


def test_the_documented_422_is_the_body_the_app_sends(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "422" in op["responses"]:
                ref = op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ValidationErrorResponse"), (method, path)
    documented = schemas["ValidationErrorResponse"]
    assert set(documented["required"]) == {"error", "detail"}
    assert set(schemas["FieldError"]["properties"]) == {"field", "message"}
    sent = json_error(client.post("/search", json={"text": "a", "k": 0}), 422)
    assert sent["error"] == documented["properties"]["error"]["const"]
    assert all(set(d) == {"field", "message"} for d in sent["detail"])


def test_search_documents_every_status_it_answers(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/search"]["post"]["responses"]
    assert {"200", "400", "404", "413", "422", "501", "503"} <= set(responses)
    for status in ("400", "404", "413", "501", "503"):
        assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


def test_the_query_fields_are_one_of_in_the_schema(client: TestClient) -> None:
    request = client.get("/openapi.json").json()["components"]["schemas"]["SearchRequest"]
    assert request["oneOf"] == [
        {"required": [n]} for n in ("text", "image", "image_uri", "video_id", "parts")
    ]
    assert request["properties"]["text"]["type"] == "string"  # no null: leave the field out instead
    body = json_error(client.post("/search", json={"text": None, "video_id": "x"}), 422)
    assert fields_of(body) == ["text"]


def test_the_api_key_is_a_security_scheme(env: tuple[LocalStore, SearchService]) -> None:
    doc = client_for(env, api_key="s3cret").get("/openapi.json").json()
    scheme = next(iter(doc["components"]["securitySchemes"].values()))
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": scheme["description"],
    }
    search = doc["paths"]["/search"]["post"]
    assert search["security"] and "401" in search["responses"]
    assert not any(p["name"].lower() == "x-api-key" for p in search.get("parameters", []))
    assert "security" not in doc["paths"]["/health"]["get"]


def test_without_a_key_the_document_asks_for_none(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert "securitySchemes" not in doc.get("components", {})
    assert all(
        "security" not in op and "401" not in op["responses"]
        for ops in doc["paths"].values()
        for op in ops.values()
    )


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_api_key_refuses_to_start(env: tuple[LocalStore, SearchService], key: str) -> None:
    with pytest.raises(ValueError, match="MEDIASEARCH_API_KEY is set but empty"):
        client_for(env, api_key=key)


def test_an_empty_header_never_matches(env: tuple[LocalStore, SearchService]) -> None:
    client = client_for(env, api_key="s3cret")
    json_error(client.post("/search", json={"text": "a"}, headers={"x-api-key": ""}), 401)


@pytest.mark.parametrize(
    ("range_header", "status"),
    [("bytes=999999999-", 416), ("bytes=abc", 400), ("items=0-1", 400), ("bytes=5-2", 400)],
)
def test_range_errors_are_json(
    env: tuple[LocalStore, SearchService], client: TestClient, range_header: str, status: int
) -> None:
    store, _ = env
    item = stable_id(store.uri("photos/red.png"))
    r = client.get(f"/media/{item}", headers={"range": range_header})
    json_error(r, status)
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{len(store.get('photos/red.png'))}"


def test_a_good_range_still_works(env: tuple[LocalStore, SearchService], client: TestClient) -> None:
    store, _ = env
    item = stable_id(store.uri("photos/red.png"))
    r = client.get(f"/media/{item}", headers={"range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == store.get("photos/red.png")[:10]


def test_a_model_that_cannot_load_is_a_503_naming_no_path(
    env: tuple[LocalStore, SearchService], tmp_path: Path
) -> None:
    store, service = env

    class Broken(LocalEncoder):
        def encode_text(self, text: str) -> np.ndarray:
            raise ModelLoadError(f"cannot load CLIP model '{tmp_path}/clip': no config.json")

    broken = SearchService(service.index, Broken(service.encoder.model), store, MediaLinks())  # type: ignore[attr-defined]
    client = TestClient(create_app(Settings(store=str(store.root)), service=broken))
    body = json_error(client.post("/search", json={"text": "a"}), 503)
    assert body["error"] == "model unavailable" and body["detail"]["request_id"]
    assert str(tmp_path) not in client.post("/search", json={"text": "a"}).text


@pytest.mark.parametrize(
    ("url", "typo"),
    [("/duplicates?treshold=0.5", "treshold"), ("/videos/v1/similar?kk=3", "kk"), ("/search/x?k=1", None)],
)
def test_a_misspelt_query_parameter_is_a_422_naming_it(
    client: TestClient, url: str, typo: str | None
) -> None:
    """FastAPI would ignore it and run with the default: `?treshold=0.5` would answer at 0.95."""
    if typo is None:
        assert client.get(url).status_code in (404, 405)  # no such route: not this check's business
        return
    body = json_error(client.get(url), 422)
    assert fields_of(body) == [f"query.{typo}"]
    assert "unknown query parameter" in body["detail"][0]["message"]


def test_declared_query_parameters_still_work(client: TestClient) -> None:
    assert client.get("/duplicates?threshold=0.99&kind=image&limit=5").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/?q=red").status_code == 200  # the page reads its own ?q= in the browser
