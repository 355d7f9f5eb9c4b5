"""Video preprocessing: probe, scene detection, frame sampling, thumbnails and scene strips.

The work is split in two passes over the file so that each is as cheap as it can be:

1. one sequential decode (threaded) where every frame is scaled down to a few dozen pixels wide
   inside libswscale and handed to PySceneDetect's ContentDetector. Detection only needs colour
   and brightness statistics, so it never sees a full-size frame; on the way we note every frame's
   timestamp and which frames are keyframes.
2. only the handful of frames we keep (N per scene) are decoded at full size: for each one we seek
   to the keyframe before it and decode forward, unless we are already past that keyframe, in
   which case decoding on is cheaper than seeking back.

Everything here works on a local file path and returns bytes; where those bytes go (and what the
records look like) is `mediasearch.indexing.preprocess`'s business.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from scenedetect import ContentDetector
from scenedetect.common import FrameTimecode

from mediasearch.core import defaults

# Containers whose frames depend on earlier ones without keyframes a demuxer can seek to.
_NO_SEEK_FORMATS = ("gif", "apng", "image2")


class VideoError(Exception):
    """A video could not be read or decoded; the message names the input."""


class VideoOptions(BaseModel):
    """How videos are cut into scenes and sampled. The defaults suit a search index of ordinary footage."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        defaults.SCENE_THRESHOLD, gt=0, description="ContentDetector threshold: lower finds more cuts"
    )
    frames_per_scene: int = Field(
        defaults.FRAMES_PER_SCENE, ge=1, le=64, description="frames sampled (and embedded) per scene"
    )
    max_scene_s: float = Field(
        defaults.MAX_SCENE_S, gt=0, description="longer scenes (and single shots) are split into windows"
    )
    min_scene_s: float = Field(0.5, ge=0, description="cuts closer together than this are merged")
    frame_max_side: int = Field(512, ge=32, le=4096, description="sampled frames are scaled to fit this")
    thumb_width: int = Field(320, ge=16, le=2048, description="keyframe thumbnail width (never upscaled)")
    strip_height: int = Field(72, ge=16, le=512, description="height of each tile in the scene strip")
    strip_max_scenes: int = Field(60, ge=1, description="longer videos show this many scenes, evenly chosen")
    detect_width: int = Field(
        96,
        ge=16,
        le=1920,
        description="frames are scaled to this width for detection; colour stats survive it",
    )
    margin_frames: int = Field(2, ge=0, description="sampled frames keep this far from a cut")
    keyframe_snap: float = Field(
        0.25,
        ge=0,
        le=0.5,
        description="a sample may move this fraction of the sample spacing to land on a keyframe (cheap to seek to)",
    )
    jpeg_quality: int = Field(90, ge=30, le=100)
    decode_threads: int = Field(0, ge=0, description="decoder threads per video; 0 lets FFmpeg choose")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says before any frame is decoded."""

    path: str
    format: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration: float | None
    frames: int | None
    seekable: bool


@dataclass
class Timings:
    """Wall-clock seconds per stage; `add` lets a job sum them over videos."""

    decode: float = 0.0
    detect: float = 0.0
    extract: float = 0.0
    encode: float = 0.0
    write: float = 0.0

    def add(self, other: Timings) -> None:
        for name in ("decode", "detect", "extract", "encode", "write"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in vars(self).items()}


@dataclass
class Detection:
    """The result of the detection pass: every frame's time, the keyframes, and where scenes start."""

    frame_times: np.ndarray  # seconds, presentation order
    keyframe_times: list[float]
    cuts: list[int]  # index of the first frame of every scene after the first
    duration: float
    width: int
    height: int


@dataclass
class SampledFrame:
    t: float
    jpeg: bytes
    width: int
    height: int


@dataclass
class Scene:
    index: int
    t_start: float
    t_end: float
    frames: list[SampledFrame] = field(default_factory=list)
    thumbnail: bytes = b""


@dataclass
class ProcessedVideo:
    info: VideoInfo
    duration: float
    fps: float
    width: int
    height: int
    scenes: list[Scene]
    strip: bytes
    timings: Timings


def _open(path: str | os.PathLike[str]) -> av.container.InputContainer:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise VideoError(f"cannot read {p}: {exc.strerror or exc}") from None
    if size == 0:
        raise VideoError(f"{p} is empty (zero bytes)")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VideoError(f"{p} is not a readable video ({reason})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream")
    return container


def _fps_of(stream: av.video.stream.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _can_seek(container: av.container.InputContainer) -> bool:
    return not any(name in container.format.name for name in _NO_SEEK_FORMATS)


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Container metadata (size, rate, duration) without decoding; raises VideoError naming `path`."""
    with _open(path) as container:
        stream = container.streams.video[0]
        duration: float | None = None
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration and not container.streams.audio:
            # With an audio track the container's duration may be the audio's, not the video's.
            duration = container.duration / av.time_base
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise VideoError(f"{path} has a video stream with no frame size")
        return VideoInfo(
            path=str(path),
            format=container.format.name,
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            fps=_fps_of(stream),
            duration=duration,
            frames=stream.frames or None,
            seekable=_can_seek(container),
        )


def _configure_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    # Frame threading pipelines whole frames across cores: the best choice for a long sequential
    # decode. It costs a few frames of latency after a seek, which the extractor tolerates.
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads


def _decode_noting_keyframes(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, keyframes: list[float]
) -> Iterator[av.VideoFrame]:
    """Decoded frames of `stream`, appending to `keyframes` the time of every packet a seek can land on.

    The demuxer's sync flag, not the decoded frame's: encoders insert I-frames at scene changes that
    are not sync points, and seeking to one of those lands on the previous real keyframe anyway.
    """
    for packet in container.demux(stream):
        if packet.is_keyframe and packet.pts is not None and packet.time_base is not None:
            keyframes.append(float(packet.pts * packet.time_base))
        yield from packet.decode()


def detect_scenes(
    path: str | os.PathLike[str], options: VideoOptions, timings: Timings | None = None
) -> Detection:
    """Decode once at detection resolution and find the cuts (frame indices) with ContentDetector."""
    timings = timings if timings is not None else Timings()
    with _open(path) as container:
        stream = container.streams.video[0]
        _configure_threads(stream, options.decode_threads)
        fps = _fps_of(stream) or 25.0
        ctx = stream.codec_context
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise VideoError(f"{path} has a video stream with no frame size")
        dw = min(options.detect_width, width)
        dh = max(2, round(height * dw / width))
        min_len = max(1, round(options.min_scene_s * fps))
        detector = ContentDetector(threshold=options.threshold, min_scene_len=min_len)
        rate = Fraction(fps).limit_denominator(1001)

        times: list[float] = []
        keyframes: list[float] = []
        cuts: list[int] = []
        last_duration = 1.0 / fps
        frames = _decode_noting_keyframes(container, stream, keyframes)
        t0 = time.perf_counter()
        idx = 0
        try:
            for frame in frames:
                t = frame.time
                if t is None:
                    t = times[-1] + 1.0 / fps if times else 0.0
                if frame.duration and frame.time_base:
                    last_duration = float(frame.duration * frame.time_base)
                times.append(t)
                small = detection_image(frame, dw, dh)
                t1 = time.perf_counter()
                timings.decode += t1 - t0
                for tc in detector.process_frame(FrameTimecode(idx, fps=rate), small):
                    cuts.append(tc.frame_num)
                t0 = time.perf_counter()
                timings.detect += t0 - t1
                idx += 1
        except av.FFmpegError as exc:
            raise VideoError(f"{path} could not be decoded at frame {idx}: {exc}") from None
        if not times:
            raise VideoError(f"{path} holds no decodable video frames")
        if idx:
            cuts.extend(tc.frame_num for tc in detector.post_process(FrameTimecode(idx - 1, fps=rate)))

    order = np.argsort(np.asarray(times), kind="stable")
    frame_times = np.asarray(times, dtype=np.float64)[order]
    # B-frame reordering never reaches us (the decoder outputs in presentation order), but a
    # broken file can; cut indices then refer to decode positions, mapped through the sort.
    if not np.all(order[:-1] < order[1:]):
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        cuts = [int(inverse[c]) for c in cuts]
    cuts = sorted({c for c in cuts if 0 < c < len(frame_times)})
    duration = float(frame_times[-1] + max(last_duration, 1e-3))
    return Detection(frame_times, sorted(keyframes), cuts, duration, width, height)


def _plane(plane: av.video.plane.VideoPlane, step: int) -> np.ndarray:
    # A strided view of the decoder's own buffer: no copy of the full-size frame is ever made.
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
    return rows[::step, : plane.width : step]


def detection_image(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """A small BGR image of `frame` for the content detector, about `width` pixels wide.

    For 4:2:0 frames (nearly all video) we gather every k-th sample of the Y, U and V planes at about
    twice the target size and area-average by 2: colour statistics, which is all ContentDetector
    looks at, survive, and it costs a fraction of a full-frame swscale (measured: ~0.3 ms vs ~1 ms a
    720p frame). Other pixel formats (GIF palettes, 4:4:4) go through swscale.
    """
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.width >= 4 * width:
        step = max(1, frame.width // (2 * width))
        y, u, v = (_plane(p, step) for p in frame.planes[:3])
        hu, wu = min(u.shape[0], y.shape[0] // 2), min(u.shape[1], y.shape[1] // 2)
        if hu >= 2 and wu >= 2:
            i420 = np.concatenate([y[: 2 * hu, : 2 * wu].ravel(), u[:hu, :wu].ravel(), v[:hu, :wu].ravel()])
            bgr = cv2.cvtColor(i420.reshape(3 * hu, 2 * wu), cv2.COLOR_YUV2BGR_I420)
            return cv2.resize(bgr, (wu, hu), interpolation=cv2.INTER_AREA)
    return frame.to_ndarray(format="bgr24", width=width, height=height, interpolation="AREA")


def scene_ranges(
    cuts: Sequence[int], frame_times: Sequence[float] | np.ndarray, duration: float, max_scene_s: float
) -> list[tuple[int, int]]:
    """Frame ranges [a, b) of the scenes, with every scene longer than `max_scene_s` split into equal windows.

    A video with no cuts is one scene, so every decodable video ends with at least one.
    """
    n = len(frame_times)
    if n == 0:
        return []
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < n), n]
    out: list[tuple[int, int]] = []
    times = np.asarray(frame_times, dtype=np.float64)
    for a, b in pairwise(bounds):
        start = float(times[a])
        end = float(times[b]) if b < n else duration
        length = end - start
        pieces = max(1, math.ceil(length / max_scene_s - 1e-9))
        if pieces == 1:
            out.append((a, b))
            continue
        edges = [a]
        for k in range(1, pieces):
            edge = int(np.searchsorted(times, start + k * length / pieces, side="left"))
            if edges[-1] < edge < b:
                edges.append(edge)
        edges.append(b)
        out.extend(pairwise(edges))
    return out


def sample_times(t_start: float, t_end: float, n: int, margin_s: float = 0.0) -> list[float]:
    """`n` times evenly spaced inside [t_start, t_end]: the centres of n equal parts, kept `margin_s` from the ends.

    Centres (not ends) so that no sample sits on a cut, where a frame off by one belongs to the
    neighbouring shot. When the margin leaves no room the scene's midpoint is returned once.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if t_end < t_start:
        raise ValueError(f"scene ends ({t_end}) before it starts ({t_start})")
    lo, hi = t_start + margin_s, t_end - margin_s
    if hi <= lo:
        return [(t_start + t_end) / 2]
    step = (hi - lo) / n
    return [lo + (i + 0.5) * step for i in range(n)]


def sample_frame_indices(
    a: int,
    b: int,
    frame_times: Sequence[float] | np.ndarray,
    scene_end: float,
    n: int,
    margin_frames: int,
    keyframes: Sequence[int] = (),
    snap: float = 0.0,
) -> list[int]:
    """Indices of up to `n` distinct frames of scene [a, b), evenly spread in time, `margin_frames` from the cuts.

    With `snap` > 0 a sample may move up to `snap` x the spacing between samples onto a keyframe
    (indices in `keyframes`): a keyframe decodes on its own after a seek, any other frame needs every
    frame since the previous keyframe, so this is most of the cost of extraction.
    """
    if b <= a:
        return []
    m = min(margin_frames, (b - a - 1) // 2)
    lo, hi = a + m, b - 1 - m
    times = np.asarray(frame_times[lo : hi + 1], dtype=np.float64)
    if len(times) == 1:
        return [lo]
    # The span of the usable frames, counting the last one's display time, split into n parts.
    last = float(frame_times[hi + 1]) if hi + 1 < len(frame_times) else scene_end
    targets = sample_times(float(times[0]), last, n)
    reach = snap * (last - float(times[0])) / n
    keys = [k for k in keyframes if lo <= k <= hi] if reach > 0 else []
    picked: list[int] = []
    for t in targets:
        i = int(np.searchsorted(times, t, side="right")) - 1  # the frame on screen at time t
        i = lo + min(max(i, 0), len(times) - 1)
        near = [k for k in keys if abs(float(frame_times[k]) - t) <= reach and k not in picked]
        if near:
            i = min(near, key=lambda k: abs(float(frame_times[k]) - t))
        if i not in picked:
            picked.append(i)
    return sorted(picked)


def _fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_frames(
    path: str | os.PathLike[str],
    times: Sequence[float],
    keyframe_times: Sequence[float],
    max_side: int,
    threads: int = 0,
) -> dict[float, Image.Image]:
    """Decode the frames shown at `times` (exact frame times from `detect_scenes`), seeking where it pays.

    Returns RGB images scaled to fit `max_side`, keyed by the requested time.
    """
    wanted = sorted(set(times))
    out: dict[float, Image.Image] = {}
    if not wanted:
        return out
    eps = 1e-4
    with _open(path) as container:
        stream = container.streams.video[0]
        _configure_threads(stream, threads)
        seekable = _can_seek(container) and bool(keyframe_times) and stream.time_base is not None
        frames = None
        position = -math.inf  # time of the last frame decoded
        try:
            for target in wanted:
                k = bisect.bisect_right(keyframe_times, target + eps) - 1
                key_t = keyframe_times[k] if k >= 0 else 0.0
                # Seek only when a keyframe lies between where we are and the target: otherwise the
                # decoder would have to work through the same frames after the seek anyway.
                if frames is None or (seekable and key_t > position + eps):
                    if seekable and key_t > eps and stream.time_base is not None:
                        container.seek(round(key_t / stream.time_base), stream=stream, backward=True)
                    elif frames is not None:
                        container.seek(0, stream=stream, backward=True)
                    frames = container.decode(stream)
                for frame in frames:
                    t = frame.time if frame.time is not None else position + eps * 2
                    position = t
                    if t >= target - eps:
                        w, h = _fit(frame.width, frame.height, max_side)
                        out[target] = frame.to_image(width=w, height=h, interpolation="AREA")
                        break
        except av.FFmpegError as exc:
            raise VideoError(f"{path} could not be decoded near t={position:.3f}s: {exc}") from None
    missing = [t for t in wanted if t not in out]
    if missing:
        raise VideoError(f"{path}: frames at {missing[:3]} s could not be decoded (file ends early?)")
    return out


def jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def thumbnail(image: Image.Image, width: int) -> Image.Image:
    """`image` scaled to `width` (never up), keeping its aspect ratio."""
    if image.width <= width:
        return image
    height = max(1, round(image.height * width / image.width))
    return image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)


def scene_strip(images: Sequence[Image.Image], height: int, max_tiles: int) -> Image.Image:
    """The scenes' thumbnails side by side at one height: a glanceable summary of the video."""
    if not images:
        raise ValueError("a scene strip needs at least one image")
    if len(images) > max_tiles:
        picks = np.linspace(0, len(images) - 1, max_tiles).round().astype(int)
        images = [images[i] for i in picks]
    tiles = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(t.width for t in tiles), height))
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width
    return strip


def check_complete(path: str | os.PathLike[str], info: VideoInfo, det: Detection) -> None:
    """Raise VideoError when the frames stop well before the duration the container declares.

    A truncated mp4 loses its index and fails to open, but a truncated Matroska/WebM file still
    plays its first part; indexing that part as the whole video would be silently wrong.
    """
    if info.duration is None or info.duration <= 0:
        return
    slack = max(0.25, 0.05 * info.duration, 2.0 / (info.fps or 25.0))
    if det.duration < info.duration - slack:
        raise VideoError(
            f"{path} is truncated: the container declares {info.duration:.2f} s "
            f"but its frames stop at {det.duration:.2f} s"
        )


class VideoPreprocessor:
    """Turns one video file into scenes, sampled frames (JPEG), thumbnails and a strip."""

    def __init__(self, options: VideoOptions | None = None) -> None:
        self.options = options or VideoOptions()

    def process(self, path: str | os.PathLike[str]) -> ProcessedVideo:
        """Raises VideoError (naming `path`) for a file that is missing, empty, truncated or not a video."""
        opts = self.options
        timings = Timings()
        info = probe(path)
        det = detect_scenes(path, opts, timings)
        check_complete(path, info, det)
        ranges = scene_ranges(det.cuts, det.frame_times, det.duration, opts.max_scene_s)

        key_idx = np.searchsorted(det.frame_times, np.asarray(det.keyframe_times) - 1e-6).tolist()
        picks: list[list[int]] = []
        for a, b in ranges:
            end = float(det.frame_times[b]) if b < len(det.frame_times) else det.duration
            picks.append(
                sample_frame_indices(
                    a,
                    b,
                    det.frame_times,
                    end,
                    opts.frames_per_scene,
                    opts.margin_frames,
                    key_idx if info.seekable else (),
                    opts.keyframe_snap,
                )
            )
        wanted = [float(det.frame_times[i]) for idx in picks for i in idx]
        t0 = time.perf_counter()
        images = read_frames(path, wanted, det.keyframe_times, opts.frame_max_side, opts.decode_threads)
        timings.extract += time.perf_counter() - t0

        t0 = time.perf_counter()
        scenes: list[Scene] = []
        thumbs: list[Image.Image] = []
        for si, ((a, b), idx) in enumerate(zip(ranges, picks, strict=True)):
            t_start = 0.0 if a == 0 else float(det.frame_times[a])
            t_end = float(det.frame_times[b]) if b < len(det.frame_times) else det.duration
            scene = Scene(si, round(t_start, 6), round(t_end, 6))
            for i in idx:
                t = float(det.frame_times[i])
                im = images[t]
                scene.frames.append(
                    SampledFrame(round(t, 6), jpeg(im, opts.jpeg_quality), im.width, im.height)
                )
            # The middle sample is the most typical frame of the shot.
            thumb = thumbnail(images[float(det.frame_times[idx[len(idx) // 2]])], opts.thumb_width)
            scene.thumbnail = jpeg(thumb, 85)
            thumbs.append(thumb)
            scenes.append(scene)
        strip = jpeg(scene_strip(thumbs, opts.strip_height, opts.strip_max_scenes), 85)
        timings.encode += time.perf_counter() - t0

        n = len(det.frame_times)
        # Container rates can be nominal (GIF, VFR); the decoded frames say what was really shown.
        fps = n / det.duration if det.duration > 0 else (info.fps or 0.0)
        return ProcessedVideo(
            info=info,
            duration=round(det.duration, 6),
            fps=round(fps, 4),
            width=det.width,
            height=det.height,
            scenes=scenes,
            strip=strip,
            timings=timings,
        )
