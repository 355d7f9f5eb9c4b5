"""The handler under the SageMaker contract: input_fn -> predict_fn -> output_fn."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mediasearch.core.images import ImageDecodeError, decode_image
from mediasearch.core.storage import LocalStore
from mediasearch.core.wire import EmbeddingResponse, parse_output_lines
from mediasearch.indexing.handler import BadRequest, ClipHandler, ManifestBatch
from tests.conftest import COLOURS, image_bytes


@pytest.fixture
def store(tmp_path) -> LocalStore:
    store = LocalStore(tmp_path)
    for name, colour in COLOURS.items():
        store.put(f"img/{name}.png", image_bytes(colour))
    good = image_bytes(COLOURS["red"], size=(80, 80), fmt="JPEG")
    store.put("bad/truncated.jpg", good[: len(good) // 2])
    store.put("bad/zero.png", b"")
    store.put("bad/text.png", b"this is not an image")
    return store


@pytest.fixture
def handler(clip_model) -> ClipHandler:
    return ClipHandler(clip_model, decode_workers=2)


def _line(store: LocalStore, key: str) -> str:
    return json.dumps({"id": key, "uri": store.uri(key), "kind": "image"})


def test_batch_with_bad_records_keeps_going(store: LocalStore, handler: ClipHandler) -> None:
    keys = [
        "img/red.png",
        "bad/truncated.jpg",
        "img/blue.png",
        "bad/zero.png",
        "bad/text.png",
        "img/none.png",
    ]
    body = "\n".join([_line(store, k) for k in keys] + ["{not json", ""]) + "\n"
    parsed = handler.input_fn(body.encode(), "application/jsonlines")
    assert isinstance(parsed, ManifestBatch)
    out, ctype = handler.output_fn(handler.predict_fn(parsed), "application/jsonlines")
    assert ctype == "application/jsonlines"
    results = parse_output_lines(out)
    assert len(results) == 7  # one line out per non-empty line in, in order
    by_id = {r.id: r for r in results}
    assert by_id["img/red.png"].ok and by_id["img/blue.png"].ok
    assert by_id["img/red.png"].width == 64 and by_id["img/red.png"].height == 48
    np.testing.assert_allclose(np.linalg.norm(by_id["img/red.png"].clip), 1.0, atol=1e-5)
    assert "truncated" in by_id["bad/truncated.jpg"].error or "decode" in by_id["bad/truncated.jpg"].error
    assert by_id["bad/zero.png"].error == "empty file (0 bytes)"
    assert by_id["bad/text.png"].error == "not a recognised image format"
    assert "does not exist" in by_id["img/none.png"].error
    assert "manifest line 7 is not a valid record" in results[-1].error
    # The output line keeps the input fields, so a join with the manifest is possible.
    assert by_id["img/red.png"].uri == store.uri("img/red.png")


def test_embeddings_match_the_model_directly(store: LocalStore, handler: ClipHandler, clip_model) -> None:
    body = _line(store, "img/green.png").encode()
    (result,) = handler.predict_fn(handler.input_fn(body, "application/jsonlines"))
    direct = clip_model.embed_images([Image.open(io.BytesIO(store.get("img/green.png")))])[0]
    np.testing.assert_allclose(result.clip, direct, atol=1e-5)
    # The identity of the weights, never the folder they were loaded from.
    assert result.model == clip_model.identity.id and result.model.startswith("sha256:")
    assert clip_model.name not in result.model


def test_realtime_image_and_text_requests(handler: ClipHandler) -> None:
    img = handler.predict_fn(handler.input_fn(image_bytes(COLOURS["red"]), "application/x-image"))
    body, ctype = handler.output_fn(img, "application/json")
    parsed = EmbeddingResponse.model_validate_json(body)
    assert ctype == "application/json" and len(parsed.embeddings) == 1 and len(parsed.embeddings[0]) == 16
    txt = handler.predict_fn(handler.input_fn(b'{"text": ["a", "b"]}', "application/json; charset=utf-8"))
    assert isinstance(txt, EmbeddingResponse) and len(txt.embeddings) == 2


@pytest.mark.parametrize(
    ("body", "ctype", "message"),
    [
        (b"{}", "application/json", "text"),
        (b'{"text": []}', "application/json", "text"),
        (b"", "application/x-image", "empty file"),
        (b"x", "text/csv", "unsupported content type"),
    ],
)
def test_bad_realtime_requests(handler: ClipHandler, body: bytes, ctype: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        handler.input_fn(body, ctype)


def test_decompression_bombs_are_refused() -> None:
    big = image_bytes(COLOURS["red"], size=(300, 300))
    with pytest.raises(ImageDecodeError, match="more than the limit"):
        decode_image(big, max_pixels=10_000)
    assert decode_image(big).size == (300, 300)


def test_animated_and_palette_images_decode_to_rgb() -> None:
    frames = [Image.new("P", (20, 10), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).mode == "RGB"
