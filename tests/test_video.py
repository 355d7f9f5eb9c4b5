"""Scene detection, sampling, windowing and frame extraction on the synthetic corpus with known cuts."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mediasearch.core.storage import LocalStore
from mediasearch.corpus.videos import (
    COLOURS,
    VideoTruth,
    ensure_corpus,
    write_not_a_video,
    write_truncated,
    write_zero_length,
)
from mediasearch.indexing.video import (
    VideoError,
    VideoOptions,
    VideoPreprocessor,
    detect_scenes,
    probe,
    read_frames,
    sample_frame_indices,
    sample_times,
    scene_ranges,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, dict[str, VideoTruth]]:
    # One copy per session, shared with test_preprocess (tests only read it).
    store = LocalStore(tmp_path_factory.getbasetemp() / "video-corpus")
    return store, ensure_corpus(store, "videos")


# --- pure functions ---------------------------------------------------------------------------------


def test_sample_times_are_evenly_spaced_centres_inside_the_scene() -> None:
    assert sample_times(0.0, 3.0, 3) == pytest.approx([0.5, 1.5, 2.5])
    assert sample_times(10.0, 12.0, 1) == pytest.approx([11.0])
    times = sample_times(1.0, 2.0, 4, margin_s=0.1)
    assert all(1.1 < t < 1.9 for t in times)
    assert np.diff(times) == pytest.approx([0.2, 0.2, 0.2])


def test_sample_times_degenerate_scene_gives_its_midpoint() -> None:
    assert sample_times(1.0, 1.1, 5, margin_s=0.1) == pytest.approx([1.05])
    with pytest.raises(ValueError, match="n must be"):
        sample_times(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="before it starts"):
        sample_times(2.0, 1.0, 1)


def test_sample_frame_indices_keep_away_from_cuts_and_are_distinct() -> None:
    times = [i / 30 for i in range(90)]
    picks = sample_frame_indices(30, 60, times, 2.0, 3, margin_frames=2)
    assert len(picks) == 3 == len(set(picks))
    assert all(32 <= i <= 57 for i in picks)
    assert picks == sorted(picks)
    # A 3-frame scene cannot hold 5 distinct samples, nor keep a 2-frame margin.
    assert sample_frame_indices(10, 13, times, 13 / 30, 5, margin_frames=2) == [11]
    assert sample_frame_indices(5, 5, times, 0.2, 3, 2) == []


def test_sampling_snaps_to_a_nearby_keyframe_only() -> None:
    times = [i / 30 for i in range(90)]
    plain = sample_frame_indices(30, 60, times, 2.0, 3, margin_frames=2)
    assert plain == [36, 45, 53]
    # A keyframe two frames from a target is taken (cheap to seek to); the cut frame itself and a
    # keyframe farther than `snap` x the spacing are not.
    assert sample_frame_indices(30, 60, times, 2.0, 3, 2, keyframes=[30, 47, 59], snap=0.25) == [36, 47, 53]
    assert sample_frame_indices(30, 60, times, 2.0, 3, 2, keyframes=[50], snap=0.1) == plain


def test_scene_ranges_window_long_scenes_only() -> None:
    times = [i / 25 for i in range(200)]  # 8 s
    assert scene_ranges([], times, 8.0, 10.0) == [(0, 200)]
    windows = scene_ranges([], times, 8.0, 3.0)
    assert len(windows) == 3 and windows[0][0] == 0 and windows[-1][1] == 200
    assert all(b - a <= 3 * 25 for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))
    # A cut splits first; only the long part is windowed.
    assert scene_ranges([25], times, 8.0, 4.0) == [(0, 25), (25, 113), (113, 200)]
    assert scene_ranges([], [], 0.0, 3.0) == []


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="threshold"):
        VideoOptions(threshold=-1)
    with pytest.raises(ValueError, match="frames_per_scene"):
        VideoOptions(frames_per_scene=0)
    with pytest.raises(ValueError):
        VideoOptions(unknown_option=1)


# --- detection on the corpus ------------------------------------------------------------------------


def _score(found: list[int], truth: list[int], tolerance: int = 1) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives), each truth cut matched at most once."""
    unmatched = list(truth)
    tp = fp = 0
    for cut in found:
        hit = next((t for t in unmatched if abs(t - cut) <= tolerance), None)
        if hit is None:
            fp += 1
        else:
            unmatched.remove(hit)
            tp += 1
    return tp, fp, len(unmatched)


def test_detection_finds_generated_cuts_within_one_frame(corpus, capsys) -> None:
    store, truths = corpus
    tp = fp = fn = 0
    misses = {}
    for key, truth in truths.items():
        det = detect_scenes(store.path(key), VideoOptions())
        assert len(det.frame_times) == truth.n_frames, key
        t, f, n = _score(det.cuts, truth.cut_frames)
        tp, fp, fn = tp + t, fp + f, fn + n
        if f or n:
            misses[key] = (det.cuts, truth.cut_frames)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    with capsys.disabled():
        print(
            f"\nscene cuts (+-1 frame) over {len(truths)} videos: precision={precision:.3f} recall={recall:.3f}"
        )
    assert tp + fn >= 20  # the corpus has enough cuts for the figures to mean something
    assert precision >= 0.9 and recall >= 0.9, misses


def test_detected_scene_times_match_truth(corpus) -> None:
    store, truths = corpus
    truth = truths["videos/vfr.mkv"]
    video = VideoPreprocessor(VideoOptions()).process(store.path("videos/vfr.mkv"))
    assert len(video.scenes) == len(truth.scenes)
    for got, want in zip(video.scenes, truth.scenes, strict=True):
        # One frame of the slowest rate (15 fps) either way.
        assert got.t_start == pytest.approx(want.t_start, abs=0.07)
        assert got.t_end == pytest.approx(want.t_end, abs=0.07)


def test_single_shot_is_split_into_windows(corpus) -> None:
    store, _ = corpus
    video = VideoPreprocessor(VideoOptions(max_scene_s=3.0)).process(store.path("videos/single_shot.mp4"))
    assert len(video.scenes) == 3
    assert video.scenes[0].t_start == 0.0 and video.scenes[-1].t_end == pytest.approx(8.0)
    assert all(s.t_end - s.t_start <= 3.0 + 1e-6 for s in video.scenes)
    assert all(len(s.frames) == 3 for s in video.scenes)


def test_short_video_gets_one_scene(corpus) -> None:
    store, _ = corpus
    video = VideoPreprocessor(VideoOptions()).process(store.path("videos/short.mp4"))
    assert video.duration == pytest.approx(0.6, abs=0.04)
    assert len(video.scenes) == 1
    assert 1 <= len(video.scenes[0].frames) <= 3
    assert all(0 < f.t < 0.6 for f in video.scenes[0].frames)


ODD_CASES = [
    ("videos/anim.gif", (160, 120)),
    ("videos/anim_odd.gif", (121, 91)),
    ("videos/odd_size.webm", (175, 97)),
    ("videos/odd_444.mkv", (161, 121)),
]


@pytest.mark.parametrize("key,size", ODD_CASES)
def test_gifs_and_odd_sizes(corpus, key: str, size: tuple[int, int]) -> None:
    store, truths = corpus
    video = VideoPreprocessor(VideoOptions(frames_per_scene=2)).process(store.path(key))
    assert (video.width, video.height) == size
    assert len(video.scenes) == len(truths[key].scenes)
    assert video.duration == pytest.approx(truths[key].duration, abs=0.05)
    for scene in video.scenes:
        for frame in scene.frames:
            assert Image.open(io.BytesIO(frame.jpeg)).size == size
        assert Image.open(io.BytesIO(scene.thumbnail)).size == size  # never upscaled
    strip = Image.open(io.BytesIO(video.strip))
    assert strip.height == 72 and strip.width > 72


def test_sampled_frames_show_their_scene(corpus) -> None:
    """Seek-based extraction lands on the right frames: each sample shows its scene's background."""
    store, truths = corpus
    key = "videos/cuts_a.mp4"
    video = VideoPreprocessor(VideoOptions(frames_per_scene=4)).process(store.path(key))
    for scene, want in zip(video.scenes, truths[key].scenes, strict=True):
        bg = np.array(COLOURS[want.background], dtype=float)
        for frame in scene.frames:
            assert want.t_start < frame.t < want.t_end
            corner = np.asarray(Image.open(io.BytesIO(frame.jpeg)).convert("RGB"), dtype=float)[:6, :6]
            assert np.abs(corner.mean(axis=(0, 1)) - bg).max() < 40, (scene.index, frame.t)


@pytest.mark.parametrize(
    "key", ["videos/cuts_b.mp4", "videos/cuts_c.webm", "videos/vfr.mkv", "videos/anim.gif"]
)
def test_seeking_gives_the_same_frames_as_decoding_through(corpus, key: str) -> None:
    store, _ = corpus
    det = detect_scenes(store.path(key), VideoOptions())
    times = [float(det.frame_times[i]) for i in (3, len(det.frame_times) // 2, len(det.frame_times) - 2)]
    seeking = read_frames(store.path(key), times, det.keyframe_times, 512)
    through = read_frames(store.path(key), times, [], 512)  # no keyframes known: no seeks
    for t in times:
        assert np.array_equal(np.asarray(seeking[t]), np.asarray(through[t])), t


def test_probe_reports_container_facts(corpus) -> None:
    store, _ = corpus
    info = probe(store.path("videos/cuts_a.mp4"))
    assert (info.width, info.height, info.fps) == (320, 240, 30.0)
    assert info.duration == pytest.approx(6.0, abs=0.05)
    assert info.seekable
    assert not probe(store.path("videos/anim.gif")).seekable


def test_bad_inputs_raise_errors_naming_the_file(corpus, tmp_path) -> None:
    store, _ = corpus
    bad = LocalStore(tmp_path)
    write_zero_length(bad, "zero.mp4")
    write_not_a_video(bad, "text.mov")
    write_truncated(bad, "cut.mp4", store.get("videos/cuts_a.mp4"))
    write_truncated(bad, "cut.webm", store.get("videos/cuts_c.webm"))
    pre = VideoPreprocessor()
    for name, reason in [
        ("zero.mp4", "empty"),
        ("text.mov", "not a readable video"),
        ("cut.mp4", "not a readable video"),
        ("cut.webm", "truncated"),
        ("missing.mp4", "cannot read"),
    ]:
        with pytest.raises(VideoError, match=reason) as err:
            pre.process(tmp_path / name)
        assert name in str(err.value)
