"""`VectorIndex.scan`: every document matching a filter, without a limit, vectors or ranking.

What a sync plans with: a source's images and videos under its URI prefix (and nothing of a source
whose name merely starts alike), or one video's scenes. LanceDB for real; OpenSearch through a
client stand-in that answers `_search` pages, so the paging (search_after on the id) is exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.index.base import SCAN_FIELDS, IndexFilter, IndexSpec
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.index.opensearch import OpenSearchIndex, scan_body


def doc(id: str, kind: DocKind, uri: str, video_id: str | None = None) -> IndexDocument:
    vector = np.zeros(4, np.float32)
    vector[len(id) % 4] = 1.0
    return IndexDocument(
        id=id,
        kind=kind,
        uri=uri,
        video_id=video_id,
        fingerprint=f"fp-{id}",
        content_hash=f"sha256:{id}",
        model="m",
        caption="words that are not read",
        clip_vector=vector,
    )


DOCS = [
    doc("a", DocKind.IMAGE, "file:///lib/a.png"),
    doc("v", DocKind.VIDEO, "file:///lib/v.mp4", "v"),
    doc("v-s0", DocKind.SCENE, "file:///lib/v.mp4", "v"),
    doc("v-s1", DocKind.SCENE, "file:///lib/v.mp4", "v"),
    doc("b", DocKind.IMAGE, "file:///lib2/b.png"),  # another source whose name starts alike
]


def test_lancedb_scan_lists_a_source_and_a_videos_scenes(tmp_path: Path) -> None:
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    assert index.scan(IndexFilter(kinds=(DocKind.IMAGE,))) == []  # no collection yet
    index.create(IndexSpec(clip_dim=4))
    index.upsert(DOCS)
    index.upsert([DOCS[0].model_copy(update={"fingerprint": "fp-new"})])

    found = index.scan(IndexFilter(kinds=(DocKind.IMAGE, DocKind.VIDEO), uri_prefix="file:///lib/"))
    assert sorted((d.id, d.kind, d.fingerprint, d.content_hash) for d in found) == [
        ("a", DocKind.IMAGE, "fp-new", "sha256:a"),
        ("v", DocKind.VIDEO, "fp-v", "sha256:v"),
    ]
    assert all(d.caption is None for d in found)  # only the fields asked for are read
    scenes = index.scan(IndexFilter(kinds=(DocKind.SCENE,), video_id="v"), fields=("id",))
    assert sorted(d.id for d in scenes) == ["v-s0", "v-s1"] and all(d.fingerprint is None for d in scenes)


class PagingClient:
    """Answers `search` like a cluster holding `docs`: the query's prefix and kind filters, sorted by
    id, `size` at a time after `search_after`."""

    def __init__(self, docs: list[IndexDocument]) -> None:
        self.docs = sorted(docs, key=lambda d: d.id)
        self.bodies: list[dict[str, Any]] = []

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        (kinds, prefix) = body["query"]["bool"]["filter"]
        after = body.get("search_after", [""])[0]
        hits = [
            d
            for d in self.docs
            if d.kind.value in kinds["terms"]["kind"]
            and d.uri.startswith(prefix["prefix"]["uri"])
            and d.id > after
        ][: body["size"]]
        return {
            "hits": {
                "hits": [
                    {
                        "_id": d.id,
                        "_source": d.model_dump(mode="json", include=set(body["_source"])),
                        "sort": [d.id],
                    }
                    for d in hits
                ]
            }
        }


def test_opensearch_scan_pages_through_everything(monkeypatch) -> None:
    import mediasearch.index.opensearch as opensearch

    monkeypatch.setattr(opensearch, "SCAN_PAGE", 2)
    many = [doc(f"img{n:02d}", DocKind.IMAGE, f"s3://b/lib/{n}.png") for n in range(5)]
    client = PagingClient([*many, doc("other", DocKind.IMAGE, "s3://b/lib2/x.png")])
    index = OpenSearchIndex(client, "media")  # type: ignore[arg-type]
    found = index.scan(IndexFilter(kinds=(DocKind.IMAGE, DocKind.VIDEO), uri_prefix="s3://b/lib/"))
    assert [d.id for d in found] == [d.id for d in many]
    assert [d.content_hash for d in found] == [d.content_hash for d in many]
    assert [b.get("search_after") for b in client.bodies] == [None, ["img01"], ["img03"]]


def test_scan_body_reads_only_the_fields_asked_for_in_id_order() -> None:
    body = scan_body(IndexFilter(video_id="v"), list(SCAN_FIELDS), 100, "abc")
    assert body["sort"] == [{"id": "asc"}] and body["search_after"] == ["abc"]
    assert body["_source"] == list(SCAN_FIELDS) and "clip_vector" not in body["_source"]
    assert body["query"] == {"bool": {"filter": [{"term": {"video_id": "v"}}]}}
