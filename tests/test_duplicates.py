"""Near-duplicate detection: the k-NN self-join, its clusters, the CLI and the API, on both backends."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.records import DocKind, IndexDocument
from mediasearch.core.settings import Settings, get_settings
from mediasearch.index.base import IndexSpec, VectorIndex
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.query.duplicates import UnionFind, find_duplicates
from tests.test_index_contract import open_backend

DIM = 16


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def base(seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).normal(size=DIM))


def near(v: np.ndarray, seed: int, eps: float) -> np.ndarray:
    """A copy of `v` moved by about `eps` (a re-encode, a resize: the same picture, a little off)."""
    return unit(v + eps * np.random.default_rng(seed).normal(size=DIM) / np.sqrt(DIM))


def planted() -> list[IndexDocument]:
    """Images: a 3-copy group, a 2-copy group and 6 unrelated; scenes of two videos, one of which
    copies the other's second scene, plus a repeated shot within one video; two copied videos."""
    a, b, s1 = base(1), base(2), base(3)
    docs = [
        IndexDocument(id="a0", kind=DocKind.IMAGE, uri="file:///m/a0.png", clip_vector=a),
        IndexDocument(id="a1", kind=DocKind.IMAGE, uri="file:///m/a1.jpg", clip_vector=near(a, 11, 0.05)),
        IndexDocument(id="a2", kind=DocKind.IMAGE, uri="file:///m/a2.png", clip_vector=near(a, 12, 0.12)),
        IndexDocument(id="b0", kind=DocKind.IMAGE, uri="file:///m/b0.png", clip_vector=b),
        IndexDocument(id="b1", kind=DocKind.IMAGE, uri="file:///m/b1.png", clip_vector=near(b, 21, 0.2)),
    ]
    docs += [
        IndexDocument(id=f"x{i}", kind=DocKind.IMAGE, uri=f"file:///m/x{i}.png", clip_vector=base(100 + i))
        for i in range(6)
    ]
    scene = dict(kind=DocKind.SCENE)
    docs += [
        IndexDocument(id="v1#0", video_id="v1", scene=0, t_start=0, t_end=2, uri="file:///m/v1.mp4", clip_vector=base(40), **scene),
        IndexDocument(id="v1#1", video_id="v1", scene=1, t_start=2, t_end=5, uri="file:///m/v1.mp4", clip_vector=s1, **scene),
        # The same shot again in v1: not a copy between videos.
        IndexDocument(id="v1#2", video_id="v1", scene=2, t_start=5, t_end=7, uri="file:///m/v1.mp4", clip_vector=near(s1, 31, 0.02), **scene),
        IndexDocument(id="v2#0", video_id="v2", scene=0, t_start=0, t_end=3, uri="file:///m/v2.mp4", clip_vector=near(s1, 32, 0.05), **scene),
        IndexDocument(id="v2#1", video_id="v2", scene=1, t_start=3, t_end=4, uri="file:///m/v2.mp4", clip_vector=base(41), **scene),
        IndexDocument(id="v1", kind=DocKind.VIDEO, uri="file:///m/v1.mp4", clip_vector=base(50)),
        IndexDocument(id="v2", kind=DocKind.VIDEO, uri="file:///m/v2.mp4", clip_vector=near(base(50), 51, 0.1)),
        IndexDocument(id="v3", kind=DocKind.VIDEO, uri="file:///m/v3.mp4", clip_vector=base(52)),
    ]  # fmt: skip
    return docs


def cosine(docs: list[IndexDocument], x: str, y: str) -> float:
    by_id = {d.id: d.clip_vector for d in docs}
    return float(by_id[x] @ by_id[y])


@pytest.fixture(params=["lancedb", "opensearch-in-memory"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    with open_backend(request.param, tmp_path, "dups") as idx:
        idx.create(IndexSpec(clip_dim=DIM))
        idx.upsert(planted())
        idx.optimize()
        yield idx


class CountingIndex:
    """The index, counting what the self-join asks of it."""

    def __init__(self, inner: VectorIndex) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()  # the self-join queries from several threads

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def test_images_cluster_with_their_copies_on_both_backends(index: VectorIndex) -> None:
    docs = planted()
    threshold = 0.9
    assert min(cosine(docs, "a0", "a1"), cosine(docs, "a0", "a2"), cosine(docs, "b0", "b1")) > threshold
    found = find_duplicates(index, DocKind.IMAGE, threshold=threshold)
    assert found.documents == 11 and found.knn_calls == 11
    clusters = [sorted(m.id for m in c.members) for c in found.clusters]
    assert clusters == [["a0", "a1", "a2"], ["b0", "b1"]]  # biggest first
    first = found.clusters[0]
    assert first.members[0].id == first.representative and first.members[0].score == 1.0
    # Every member's score is its cosine to the representative, best first.
    expected = [cosine(docs, first.representative, m.id) for m in first.members[1:]]
    assert [m.score for m in first.members[1:]] == pytest.approx(expected, abs=1e-4)
    assert expected == sorted(expected, reverse=True)
    assert all(p.score >= threshold for c in found.clusters for p in c.pairs)
    assert first.max_score == max(p.score for p in first.pairs)


def test_the_threshold_is_respected(index: VectorIndex) -> None:
    docs = planted()
    weakest = cosine(docs, "b0", "b1")
    assert weakest < cosine(docs, "a0", "a1")
    above = find_duplicates(index, DocKind.IMAGE, threshold=round(weakest + 0.005, 3))
    assert ["b0", "b1"] not in [sorted(m.id for m in c.members) for c in above.clusters]
    assert all(p.score >= above.threshold for c in above.clusters for p in c.pairs)
    assert find_duplicates(index, DocKind.IMAGE, threshold=1.0).clusters == []


def test_scenes_pair_only_across_videos_with_their_spans(index: VectorIndex) -> None:
    found = find_duplicates(index, DocKind.SCENE, threshold=0.9)
    assert len(found.clusters) == 1
    members = {m.id: m for m in found.clusters[0].members}
    # v1's repeated shot joins through v2's copy, never by a pair inside v1.
    assert set(members) == {"v1#1", "v1#2", "v2#0"}
    assert all({p.a.split("#")[0], p.b.split("#")[0]} == {"v1", "v2"} for p in found.clusters[0].pairs)
    assert (members["v2#0"].t_start, members["v2#0"].t_end) == (0, 3)
    assert (members["v1#1"].t_start, members["v1#1"].t_end) == (2, 5)


def test_videos_by_their_whole_video_vectors(index: VectorIndex) -> None:
    found = find_duplicates(index, DocKind.VIDEO, threshold=0.9)
    assert [sorted(m.id for m in c.members) for c in found.clusters] == [["v1", "v2"]]
    assert all(m.kind is DocKind.VIDEO for m in found.clusters[0].members)


def test_one_knn_query_per_document_not_all_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    docs = [
        IndexDocument(id=f"i{i:04d}", kind=DocKind.IMAGE, uri=f"file:///m/{i}.png", clip_vector=v)
        for i, v in enumerate(vectors)
    ]
    # Ten planted copies.
    docs += [
        IndexDocument(id=f"c{i:04d}", kind=DocKind.IMAGE, uri=f"file:///m/c{i}.png", clip_vector=near(vectors[i], i, 0.05))
        for i in range(10)
    ]  # fmt: skip
    inner = LanceDBIndex(str(tmp_path / "db"), "media")
    inner.create(IndexSpec(clip_dim=DIM))
    inner.upsert(docs)
    counting = CountingIndex(inner)
    found = find_duplicates(counting, DocKind.IMAGE, threshold=0.99, neighbours=5)  # type: ignore[arg-type]
    assert counting.calls["knn"] == len(docs) == found.knn_calls
    assert counting.calls["scan"] == 1
    # Vectors are read in batches, plus once more for each cluster shown.
    assert counting.calls["get_many_with_vectors"] <= -(-len(docs) // 256) + len(found.clusters)
    pairs = {tuple(sorted(m.id for m in c.members)) for c in found.clusters}
    assert pairs == {(f"c{i:04d}", f"i{i:04d}") for i in range(10)}


def test_progress_is_reported(index: VectorIndex) -> None:
    seen: list[tuple[int, int]] = []
    find_duplicates(
        index, DocKind.IMAGE, threshold=0.9, progress=lambda done, total: seen.append((done, total))
    )
    assert seen and seen[-1] == (11, 11)


def test_union_find_joins_chains() -> None:
    sets = UnionFind()
    for a, b in [("a", "b"), ("c", "d"), ("b", "c"), ("x", "y")]:
        sets.union(a, b)
    assert sorted(sorted(g) for g in sets.groups()) == [["a", "b", "c", "d"], ["x", "y"]]


def test_limit_cuts_and_says_so(index: VectorIndex) -> None:
    found = find_duplicates(index, DocKind.IMAGE, threshold=0.9, limit=1)
    assert len(found.clusters) == 1 and found.truncated and found.clusters[0].size == 3


# ------------------------------------------------------------------------------- CLI and API


@pytest.fixture
def lancedb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_clip_dir: Path) -> dict[str, str]:
    idx = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    idx.create(IndexSpec(clip_dim=DIM))
    idx.upsert(planted())
    env = {
        "MEDIASEARCH_LANCEDB_URI": str(tmp_path / "lancedb"),
        "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir),
        "MEDIASEARCH_STORE": str(tmp_path / "store"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    return env


def run_cli(env: dict[str, str], *args: str) -> Any:
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["duplicates", *args], env=env)


def test_cli_table_and_json(lancedb_env: dict[str, str]) -> None:
    table = run_cli(lancedb_env, "--threshold", "0.9")
    assert table.exit_code == 0, table.output
    assert "2 cluster(s) of images at cosine >= 0.9 among 11 document(s), 11 k-NN queries" in table.stdout
    assert "cluster 1: 3 members" in table.stdout and "cluster 2: 2 members" in table.stdout
    scenes = run_cli(lancedb_env, "--threshold", "0.9", "--kind", "scene")
    assert "2.0-5.0s of video v1" in scenes.stdout
    body = json.loads(run_cli(lancedb_env, "--threshold", "0.9", "--json", "--kind", "video").stdout)
    assert body["kind"] == "video" and [len(c["members"]) for c in body["clusters"]] == [2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "1.5"], "--threshold: must be a cosine similarity in [0, 1], got 1.5"),
        (["--kind", "frame"], "--kind: must be image, video or scene, not 'frame'"),
        (["--neighbours", "0"], "--neighbours: must be 1 to 100, got 0"),
        (["--limit", "0"], "--limit: must be 1 to 1000, got 0"),
    ],
)
def test_cli_mistakes_are_one_line(lancedb_env: dict[str, str], args: list[str], message: str) -> None:
    result = run_cli(lancedb_env, *args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {message}"] or message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_without_an_index_says_where_it_looked(tmp_path: Path) -> None:
    env = {"MEDIASEARCH_LANCEDB_URI": str(tmp_path / "nothing")}
    result = run_cli(env)
    assert result.exit_code == 1 and "there is no index at" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_api_duplicates_and_its_422s(lancedb_env: dict[str, str]) -> None:
    from mediasearch.query.api import create_app

    with TestClient(create_app(Settings())) as client:
        ok = client.get("/duplicates", params={"threshold": 0.9})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert [c["size"] for c in body["clusters"]] == [3, 2]
        assert body["clusters"][0]["members"][0]["thumbnail_url"] is None
        assert body["clusters"][0]["members"][0]["url"].endswith(body["clusters"][0]["representative"])
        scenes = client.get("/duplicates", params={"threshold": 0.9, "kind": "scene"}).json()
        assert {m["id"] for m in scenes["clusters"][0]["members"]} == {"v1#1", "v1#2", "v2#0"}
        for params in (
            {"threshold": 2},
            {"threshold": "x"},
            {"kind": "frame"},
            {"limit": 0},
            {"neighbours": 101},
        ):
            bad = client.get("/duplicates", params=params)
            assert bad.status_code == 422, (params, bad.text)
            field = next(iter(params))
            assert bad.json()["detail"][0]["field"] == f"query.{field}"


# ------------------------------------------------------------ a real corpus, the tiny random CLIP


def test_a_trimmed_copy_overlaps_its_source_by_scenes(tmp_path: Path, clip_model: Any) -> None:
    from mediasearch.core.records import stable_id
    from mediasearch.core.storage import LocalStore
    from mediasearch.corpus.videos import default_specs, trim, write_corpus
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.pipeline import ingest
    from mediasearch.indexing.video import VideoOptions

    store = LocalStore(tmp_path / "media")
    specs = [s for s in default_specs("videos") if s.key.endswith(("cuts_a.mp4", "cuts_d.mkv"))]
    write_corpus(store, "videos", specs=specs, duplicates=[])
    # cuts_a's scenes are 1.5, 2, 1 and 1.5 s long: from 1.5 s on is its last three scenes.
    store.put("videos/dups/cuts_a_trimmed.mp4", trim(store.get("videos/cuts_a.mp4"), "t.mp4", 1.5))
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    report = ingest(
        store, index, ClipHandler(clip_model), video_options=VideoOptions(max_scene_s=3.0), progress=False
    )
    assert not report.failures, report.failures
    source, copy = (stable_id(store.uri(k)) for k in ("videos/cuts_a.mp4", "videos/dups/cuts_a_trimmed.mp4"))

    found = find_duplicates(index, DocKind.SCENE, threshold=0.99)
    linking = [c for c in found.clusters if {source, copy} <= {m.video_id for m in c.members}]
    assert linking, [[(m.video_id, m.t_start) for m in c.members] for c in found.clusters]
    # The source scenes the copy matches lie in the part it kept; the dropped first one (0-1.5 s)
    # has nothing to match.
    matched = [m for c in linking for m in c.members if m.video_id == source]
    assert matched and all(m.t_end is not None and m.t_end > 1.5 for m in matched)
    assert 0.0 not in {m.t_start for m in matched}


def test_cli_help() -> None:
    result = CliRunner().invoke(app, ["duplicates", "--help"])
    assert result.exit_code == 0 and "--threshold" in result.output and "--kind" in result.output
