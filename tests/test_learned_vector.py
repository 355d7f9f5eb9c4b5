"""The trained video encoder's feature in the index: stored by both backends, computed at ingest,
and what `similar --encoder learned` / GET /videos/{id}/similar?encoder=learned rank by."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.choices import VideoEncoder as EncoderChoice
from mediasearch.core.model_identity import ModelIdentity, clip_part, with_video_encoder
from mediasearch.core.records import DocKind, IndexDocument, SearchRequest
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle
from mediasearch.index.base import IndexFilter, IndexSpec, VectorField, VectorIndex
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.index.opensearch import index_body
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.models.clip import ClipModel
from mediasearch.models.video_encoder import VideoEncoder
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import QueryError, SearchService
from mediasearch.training.config import VideoTrainConfig
from mediasearch.training.video import train_video_encoder
from tests.test_index_contract import open_backend, unit

LEARNED_DIM = 12


def video(i: int, learned: np.ndarray | None) -> IndexDocument:
    return IndexDocument(
        id=f"v{i}",
        kind=DocKind.VIDEO,
        video_id=f"v{i}",
        uri=f"file:///videos/{i}.mp4",
        clip_vector=unit(i),
        learned_vector=learned,
        fingerprint=f"fp{i}",
    )


@pytest.mark.parametrize("backend", ["lancedb", "opensearch-in-memory", "opensearch"])
def test_learned_vectors_round_trip_and_rank(backend: str, tmp_path: Path) -> None:
    with open_backend(backend, tmp_path, "learned") as index:
        index.create(IndexSpec(clip_dim=8, caption_dim=4, learned_dim=LEARNED_DIM))
        query = unit(100, LEARNED_DIM)
        # Learned vectors at falling similarity to `query`; their CLIP vectors rank them otherwise.
        docs = [
            video(i, None if i == 4 else query * (1 - 0.2 * i) + unit(i, LEARNED_DIM) * 0.3 * i)
            for i in range(5)
        ]
        index.upsert(docs)
        index.optimize()
        back = {d.id: d for d in index.get_many_with_vectors([d.id for d in docs])}
        for d in docs:
            got = back[d.id].learned_vector
            assert (got is None) == (d.learned_vector is None)
            if got is not None and d.learned_vector is not None:
                assert np.allclose(got, d.learned_vector, atol=1e-6)
        hits = index.knn(query, 10, IndexFilter(kinds=(DocKind.VIDEO,)), field=VectorField.LEARNED)
        # Every video with a learned vector, in order of it; the one without is not a candidate.
        assert [h.document.id for h in hits] == ["v0", "v1", "v2", "v3"]
        clip_order = [h.document.id for h in index.knn(unit(3), 5, field=VectorField.CLIP)]
        assert clip_order[0] == "v3"


def test_opensearch_maps_a_4096_wide_learned_vector_within_the_engine_limit() -> None:
    from tests.fake_opensearch import MemoryCluster, client_for

    body = index_body(IndexSpec(clip_dim=512))
    mapping = body["mappings"]["properties"]["learned_vector"]
    assert mapping["type"] == "knn_vector" and mapping["dimension"] == 4096
    # The strict 2.19 double refuses dimensions over KNNEngine.MAX_DIMENSIONS_BY_ENGINE (16,000).
    from mediasearch.index.opensearch import OpenSearchIndex

    idx = OpenSearchIndex(client_for(MemoryCluster()), "wide")
    idx.create(IndexSpec(clip_dim=512))
    wide = np.zeros(4096, np.float32)
    wide[7] = 1.0
    idx.upsert([video(1, wide).model_copy(update={"clip_vector": np.eye(512, dtype=np.float32)[0]})])
    assert np.array_equal(idx.get_with_vectors("v1").learned_vector, wide)  # type: ignore[union-attr]


def test_a_generation_identity_names_the_video_encoder() -> None:
    clip = ModelIdentity(id="sha256:abc", source="/models/clip")
    both = with_video_encoder(clip, ModelIdentity(id="video-encoder:md5:def", source="/enc"))
    assert both.id != clip.id and both.source == clip.source
    assert clip_part(both.id) == clip.id and clip_part(clip.id) == clip.id


# ------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory, clip_model: ClipModel):
    """Six tiny videos, an encoder trained on them, and an index built with it."""
    root = tmp_path_factory.mktemp("learned-videos")
    data = root / "videos"
    data.mkdir()
    for i in range(6):
        spec = VideoSpec(f"clip{i}.mp4", 64, 48, 8, scenes_cycle([1.0, 1.0, 0.75], offset=i))
        (data / spec.key).write_bytes(render_video(spec, seed=i)[0])
    config = VideoTrainConfig(
        epochs=3, segment_seconds=2, frames=4, fps=4, dim=LEARNED_DIM, hidden=16, aug_draws=1, image_size=32
    )
    run = train_video_encoder(config, str(data), root / "run", tower=clip_model, progress=False, threads=1)
    encoder = VideoEncoder(run.encoder_dir)
    store = LocalStore(data)
    index = LanceDBIndex(str(root / "lancedb"), "media")
    report = ingest(
        store,
        index,
        ClipHandler(clip_model, decode_workers=1),
        video_options=VideoOptions(max_scene_s=1.0, frames_per_scene=2),
        progress=False,
        video_encoder=encoder,
    )
    assert report.load.failed == 0 and report.load.learned == 6 and not report.load.learned_skipped
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return index, encoder, service, store


def test_ingest_stores_the_learned_feature_on_every_video(ingested) -> None:
    index, _, _, _ = ingested
    videos = index.scan(IndexFilter(kinds=(DocKind.VIDEO,)))
    assert len(videos) == 6
    docs = index.get_many_with_vectors([v.id for v in videos])
    for d in docs:
        assert d.learned_vector is not None and d.learned_vector.shape == (LEARNED_DIM,)
        assert np.linalg.norm(d.learned_vector) == pytest.approx(1.0, abs=1e-5)
    scenes = index.get_many_with_vectors([s.id for s in index.scan(IndexFilter(kinds=(DocKind.SCENE,)))])
    assert scenes and all(s.learned_vector is None for s in scenes)  # a video's feature, not a scene's
    assert len({d.learned_vector.tobytes() for d in docs if d.learned_vector is not None}) == 6


def test_similar_with_the_learned_encoder_ranks_by_its_feature(ingested) -> None:
    index, _, service, store = ingested
    videos = index.get_many_with_vectors([v.id for v in index.scan(IndexFilter(kinds=(DocKind.VIDEO,)))])
    query = videos[0]
    assert query.learned_vector is not None
    expected = sorted(
        (d for d in videos if d.id != query.id),
        key=lambda d: -float(np.dot(d.learned_vector, query.learned_vector)),  # type: ignore[arg-type]
    )
    response = service.search(
        SearchRequest(video_id=query.id, k=5, kinds=["video"], encoder=EncoderChoice.LEARNED)  # type: ignore[list-item]
    )
    assert [r.id for r in response.results] == [d.id for d in expected]
    for r, d in zip(response.results, expected, strict=True):
        assert r.score == pytest.approx(float(np.dot(d.learned_vector, query.learned_vector)), abs=1e-4)  # type: ignore[arg-type]
        assert "learned video features" in (r.explanation or "")

    client = TestClient(create_app(Settings(store=store.root_uri), service=service))
    api = client.get(f"/videos/{query.id}/similar", params={"k": 5, "encoder": "learned"})
    assert api.status_code == 200, api.text
    assert [r["id"] for r in api.json()["results"]] == [d.id for d in expected]
    assert client.get(f"/videos/{query.id}/similar", params={"encoder": "nope"}).status_code == 422


def test_learned_needs_a_video_and_an_index_built_with_an_encoder(
    tmp_path: Path, clip_model: ClipModel
) -> None:
    index: VectorIndex = LanceDBIndex(str(tmp_path / "db"), "media")
    index.create(IndexSpec(clip_dim=8))
    index.upsert([video(1, None), video(2, None)])
    service = SearchService(index, LocalEncoder(clip_model), None, MediaLinks())
    with pytest.raises(QueryError, match="encoder=learned compares videos") as wrong:
        service.search(SearchRequest(text="a dog", encoder=EncoderChoice.LEARNED))
    assert wrong.value.status == 400 and wrong.value.field == "encoder"
    with pytest.raises(QueryError, match="no learned vector") as caught:
        service.search(SearchRequest(video_id="v1", encoder=EncoderChoice.LEARNED))
    assert caught.value.status == 409
    client = TestClient(create_app(Settings(), service=service))
    answer = client.get("/videos/v1/similar", params={"encoder": "learned"})
    assert answer.status_code == 409 and "MEDIASEARCH_VIDEO_ENCODER" in answer.text


def test_frames_of_another_clip_get_no_learned_vector(
    ingested, tmp_path: Path, clip_model: ClipModel
) -> None:
    _, encoder, _, store = ingested

    class OtherClipEncoder:
        dim = encoder.dim
        clip_identity = "sha256:another-clip"

        def encode_video(self, frame_vectors: np.ndarray, times: np.ndarray) -> np.ndarray:
            raise AssertionError("must not be called")

    index = LanceDBIndex(str(tmp_path / "db"), "media")
    report = ingest(
        store,
        index,
        ClipHandler(clip_model, decode_workers=1),
        video_options=VideoOptions(max_scene_s=1.0, frames_per_scene=2),
        progress=False,
        video_encoder=OtherClipEncoder(),
    )
    assert report.load.learned == 0 and len(report.load.learned_skipped) == 6
    assert "sha256:another-clip" in report.load.learned_skipped[0]
    videos = index.get_many_with_vectors([v.id for v in index.scan(IndexFilter(kinds=(DocKind.VIDEO,)))])
    assert len(videos) == 6 and all(v.learned_vector is None for v in videos)


def test_cli_similar_takes_the_encoder(app_env: None, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mediasearch.cli import app

    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    index.create(IndexSpec(clip_dim=8, learned_dim=LEARNED_DIM))
    query = unit(100, LEARNED_DIM)
    index.upsert(
        [video(i, query * (1 - 0.2 * i) + unit(i, LEARNED_DIM) * 0.3 * i) for i in range(4)]
        + [video(9, None)]
    )
    index.optimize()
    found = CliRunner().invoke(app, ["similar", "v0", "--encoder", "learned", "--k", "3"])
    assert found.exit_code == 0, found.output
    ids = [line.split()[3] for line in found.stdout.splitlines() if " video " in line]
    assert ids == ["v1", "v2", "v3"]  # by the learned vectors; v9 has none and is no candidate
    missing = CliRunner().invoke(app, ["similar", "v9", "--encoder", "learned"])
    assert missing.exit_code == 2 and "no learned vector" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    wrong = CliRunner().invoke(app, ["search", "a dog", "--encoder", "learned"])
    assert wrong.exit_code == 2 and "--encoder learned compares videos" in wrong.stderr
