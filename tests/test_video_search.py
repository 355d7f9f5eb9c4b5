"""Videos end to end over moto S3: videos -> scenes -> frames -> transform -> load -> search.

A query whose answer is a known scene returns its video with the right time range; `similar` finds
the near-duplicate first; corrupt, truncated and zero-length videos are error records while the
others are indexed; a changed video is re-indexed with no stale scene left.
"""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from mediasearch.core.records import DocKind, SearchRequest, stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import open_store
from mediasearch.corpus.videos import write_corpus, write_not_a_video, write_truncated, write_zero_length
from mediasearch.index.base import IndexFilter
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService, aggregate_scenes

OPTIONS = VideoOptions(max_scene_s=3.0, frames_per_scene=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, moto_endpoint, clip_model):
    import boto3

    bucket = "video-e2e"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    store = open_store(f"s3://{bucket}")
    truths = write_corpus(store, "videos")
    source = store.get("videos/cuts_b.mp4")
    write_truncated(store, "videos/bad/truncated.mp4", source)
    write_zero_length(store, "videos/bad/empty.mp4")
    write_not_a_video(store, "videos/bad/notes.mkv")
    index = LanceDBIndex(str(tmp_path_factory.mktemp("lancedb")), "media")
    handler = ClipHandler(clip_model, decode_workers=2)
    report = ingest(store, index, handler, prefix="videos", video_options=OPTIONS, progress=False)
    service = SearchService(index, LocalEncoder(clip_model), store, MediaLinks())
    return store, truths, index, handler, report, service


def frame_at(data: bytes, t: float) -> bytes:
    """The frame shown at time t, as PNG bytes: an image query taken from the video itself."""
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(video=0):
            if frame.time is not None and frame.time >= t:
                buf = io.BytesIO()
                frame.to_image().save(buf, format="PNG")
                return buf.getvalue()
    raise AssertionError(f"no frame at {t}")


def test_bad_videos_are_error_records_and_the_rest_is_indexed(corpus) -> None:
    store, truths, index, _, report, _ = corpus
    failed = {f.uri: f.error for f in report.failures}
    assert set(failed) == {store.uri(f"videos/bad/{n}") for n in ("truncated.mp4", "empty.mp4", "notes.mkv")}
    assert all(failed.values())
    assert index.count(IndexFilter(kinds=(DocKind.VIDEO,))) == len(truths)
    for key, truth in truths.items():
        video = index.get_with_vectors(stable_id(store.uri(key)))
        assert video is not None, key
        assert video.duration == pytest.approx(truth.duration, abs=0.15)
        assert video.scene_count and video.scene_count >= 1 and video.strip
        np.testing.assert_allclose(np.linalg.norm(video.clip_vector), 1.0, atol=1e-5)


def test_scenes_carry_time_ranges_and_thumbnails(corpus) -> None:
    store, truths, index, _, _, _ = corpus
    vid = stable_id(store.uri("videos/single_shot.mp4"))
    scenes = sorted(
        (
            h.document
            for h in index.knn(np.ones(16, np.float32), 50, IndexFilter(kinds=(DocKind.SCENE,), video_id=vid))
        ),
        key=lambda d: d.scene,
    )
    # An 8 s single shot with max_scene_s=3 becomes fixed windows, covering the whole video.
    assert len(scenes) >= 3
    assert scenes[0].t_start == pytest.approx(0.0, abs=0.05)
    assert scenes[-1].t_end == pytest.approx(truths["videos/single_shot.mp4"].duration, abs=0.15)
    assert all(s.t_end - s.t_start <= 3.0 + 1e-6 for s in scenes)
    assert all(s.thumbnail and store.key_of(s.thumbnail) for s in scenes)
    short = index.get(stable_id(store.uri("videos/short.mp4")))
    assert short is not None and short.scene_count == 1


def label_at(truths, key: str, t: float) -> str:
    return next(s.label for s in truths[key].scenes if s.t_start <= t < s.t_end)


def test_image_query_finds_the_scene_with_its_time_range(corpus) -> None:
    store, truths, _, _, _, service = corpus
    # The corpus reuses scene looks across videos (as real footage reuses shots), so several videos
    # can hold an equally good scene: the right video must be among them with the right time range,
    # and whatever comes first must show the same thing at the time it names.
    for key in ("videos/cuts_a.mp4", "videos/cuts_d.mkv", "videos/vfr.mkv"):
        for scene in truths[key].scenes:
            t = (scene.t_start + scene.t_end) / 2
            query = base64.b64encode(frame_at(store.get(key), t)).decode()
            response = service.search(SearchRequest(image=query, kinds=["video"], k=5))
            found = {r.uri: r for r in response.results}
            assert store.uri(key) in found, (key, t)
            best = found[store.uri(key)].scenes[0]
            assert best.t_start - 0.05 <= t <= best.t_end + 0.05, (key, t, best)
            assert best.t_start == pytest.approx(scene.t_start, abs=0.1)
            assert best.t_end == pytest.approx(scene.t_end, abs=0.1)
            top = response.results[0]
            top_key = store.key_of(top.uri)
            midpoint = (top.scenes[0].t_start + top.scenes[0].t_end) / 2
            assert label_at(truths, top_key, midpoint) == scene.label
            assert top.explanation.startswith("max over")
            assert top.scenes[0].thumbnail_url


def test_similar_returns_the_near_duplicate_first(corpus) -> None:
    store, _, _, _, _, service = corpus
    client = TestClient(create_app(Settings(store=store.root_uri), service=service))
    for source, dup in (
        ("videos/cuts_a.mp4", "videos/dups/cuts_a_small.mp4"),
        ("videos/cuts_c.webm", "videos/dups/cuts_c_reencoded.mp4"),
    ):
        r = client.get(f"/videos/{stable_id(store.uri(source))}/similar", params={"k": 5})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["id"] == stable_id(store.uri(dup))
        assert stable_id(store.uri(source)) not in [x["id"] for x in results]
        assert len(results) == 5 and all(x["kind"] == "video" for x in results)
    assert client.get("/videos/nope/similar").status_code == 404


def test_changed_video_replaces_its_scenes(corpus) -> None:
    store, truths, index, handler, _, _ = corpus
    vid = stable_id(store.uri("videos/cuts_e.mov"))
    before = index.count(IndexFilter(kinds=(DocKind.SCENE,), video_id=vid))
    assert before == len(truths["videos/cuts_e.mov"].scenes)
    store.put("videos/cuts_e.mov", store.get("videos/cuts_d.mkv"))  # now 4 scenes instead of 2
    total = index.count()
    again = ingest(store, index, handler, prefix="videos", video_options=OPTIONS, progress=False)
    assert again.videos.processed == 1  # only the changed video is preprocessed again
    after = index.count(IndexFilter(kinds=(DocKind.SCENE,), video_id=vid))
    assert after == len(truths["videos/cuts_d.mkv"].scenes)
    assert index.count() == total + after - before


def test_aggregations_are_named_and_explained() -> None:
    from mediasearch.core.records import Aggregation, IndexDocument
    from mediasearch.index.base import Hit

    def scene(v: str, n: int, score: float) -> Hit:
        doc = IndexDocument(
            id=f"{v}{n}",
            kind="scene",
            uri="u",
            video_id=v,
            scene=n,
            t_start=n,
            t_end=n + 1,
            clip_vector=[1.0],
        )
        return Hit(doc, score)

    hits = [
        scene("a", 0, 0.9),
        scene("b", 0, 0.8),
        scene("b", 1, 0.7),
        scene("b", 2, 0.6),
        scene("a", 1, 0.1),
    ]
    assert [v.video_id for v in aggregate_scenes(hits, Aggregation.MAX, 2)] == ["a", "b"]
    assert [v.video_id for v in aggregate_scenes(hits, Aggregation.SUM, 2)] == ["b", "a"]
    mean = aggregate_scenes(hits, Aggregation.MEAN, 2)
    assert [v.video_id for v in mean] == ["b", "a"] and mean[0].score == pytest.approx(0.7)
    top3 = aggregate_scenes(hits, Aggregation.TOP3_MEAN, 1)[0]
    assert top3.score == pytest.approx(0.7)
    assert (
        top3.explanation
        == "top3_mean over 3 matching scene(s) = 0.700: scene 0 (0.0-1.0s) 0.800, scene 1 (1.0-2.0s) 0.700, scene 2 (2.0-3.0s) 0.600"
    )


def test_old_outputs_of_a_changed_video_never_reach_its_new_scene_vectors(tmp_path, clip_model) -> None:
    """The stale-frame bug: a SageMaker output of the old version, still (or again) in the outputs
    folder when the loader runs, used to be averaged into the new version's scene vectors."""
    from mediasearch.core.layout import WorkLayout
    from mediasearch.core.storage import LocalStore
    from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle
    from mediasearch.indexing.loader import Loader

    store = LocalStore(tmp_path / "media")
    layout = WorkLayout("_mediasearch")
    key = "clip.mp4"
    vid = stable_id(store.uri(key))
    first, _ = render_video(VideoSpec(key, 160, 96, 25, scenes_cycle([1.0, 1.2], 1)), seed=1)
    store.put(key, first)
    index = LanceDBIndex(str(tmp_path / "lancedb"), "media")
    handler = ClipHandler(clip_model, decode_workers=1)
    ingest(store, index, handler, video_options=OPTIONS, progress=False)
    (old_output,) = [k for k in (o.key for o in store.list(layout.outputs_root)) if f"frames-{vid}-" in k]
    old_body = store.get(old_output)

    # The video changes; a clean re-ingest gives the reference scene vectors.
    second, _ = render_video(VideoSpec(key, 160, 96, 25, scenes_cycle([0.8, 0.9, 1.1], 2)), seed=2)
    store.put(key, second)
    ingest(store, index, handler, video_options=OPTIONS, progress=False)
    assert not store.exists(old_output)  # the sweep removed the old version's output
    scenes = IndexFilter(kinds=(DocKind.SCENE,), video_id=vid)

    def scene_vectors() -> dict[int, np.ndarray]:
        ids = [h.document.id for h in index.knn(np.ones(clip_model.dim, np.float32), 100, scenes)]
        return {d.scene or 0: d.clip_vector for d in index.get_many_with_vectors(ids)}

    reference = scene_vectors()
    assert reference

    # A late SageMaker job (or a copy from elsewhere) puts the old version's output back; loading every
    # output of the model, as `load` and `aws load` do, must leave the new scene vectors untouched.
    store.put(old_output, old_body)
    loader = Loader(store, index, layout, progress=False)
    report = loader.load(loader.output_keys(handler.output_tag))
    assert report.stale_frames == len(old_body.decode().splitlines()) > 0
    after = scene_vectors()
    assert after.keys() == reference.keys()
    for scene, vector in reference.items():
        np.testing.assert_array_equal(after[scene], vector)
