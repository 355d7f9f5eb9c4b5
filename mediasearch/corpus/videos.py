"""Deterministic synthetic videos whose scene cuts are known, for tests, demos and the benchmark.

Every scene has its own background colour and brightness plus a moving shape, so a content
detector sees a hard cut between scenes and only small changes inside one. Ground truth (cut frame
indices, cut times and a text label per scene) is written as JSON Lines beside the videos, so tests
can score detection and search can be checked against "a red circle on a blue background".

The default corpus covers the awkward cases a real library has: several containers and codecs
(mp4/h264, webm/vp8, mkv, mov/mpeg4, animated GIF), a long single shot, a clip shorter than one
second, odd frame sizes, a variable frame rate, and near-duplicate re-encodes.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from mediasearch.core.storage import ObjectStore

LABELS_KEY = "labels/videos.jsonl"
TRUTH_KEY = "labels/videos-truth.json"

# (name, RGB). Consecutive scenes take colours far apart in hue *and* brightness.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 30),
    "blue": (30, 50, 200),
    "yellow": (235, 220, 40),
    "green": (30, 150, 50),
    "white": (240, 240, 240),
    "purple": (110, 30, 140),
    "orange": (245, 140, 20),
    "black": (15, 15, 15),
    "cyan": (40, 210, 220),
    "pink": (240, 120, 180),
    "gray": (120, 120, 120),
}
SHAPES = ("circle", "square", "triangle")
# Backgrounds and shapes that cycle so that neighbouring scenes always differ strongly.
_BG_CYCLE = ("blue", "yellow", "black", "green", "white", "purple", "orange", "cyan", "red", "gray")
_FG_CYCLE = ("red", "blue", "white", "yellow", "black", "orange", "purple", "pink", "blue", "cyan")


@dataclass(frozen=True)
class SceneSpec:
    """One shot: a shape of one colour moving over a background of another."""

    duration_s: float
    background: str
    shape: str
    colour: str
    fps: float | None = None  # overrides the video's rate for this scene: how a VFR video is built

    @property
    def label(self) -> str:
        return f"a {self.colour} {self.shape} on a {self.background} background"


@dataclass(frozen=True)
class VideoSpec:
    key: str
    width: int
    height: int
    fps: float
    scenes: tuple[SceneSpec, ...]
    codec: str = "libx264"  # libx264, libvpx, mpeg4, or "gif" (written with Pillow)
    pix_fmt: str = "yuv420p"
    crf: int = 23
    gop_s: float = 2.0  # keyframe interval: what seeking can jump to
    texture: bool = True  # a panned low-frequency texture, so frames are not flat colour
    grain: float = 0.0  # per-frame noise (std, grey levels): makes the bitrate, and decode cost, realistic


@dataclass
class SceneTruth:
    key: str
    scene: int
    t_start: float
    t_end: float
    frame_start: int
    frame_end: int  # exclusive
    label: str
    background: str
    shape: str
    colour: str
    duplicate_of: str | None = None


@dataclass
class VideoTruth:
    key: str
    width: int
    height: int
    duration: float
    n_frames: int
    cut_frames: list[int] = field(default_factory=list)  # first frame index of every scene after the first
    cut_times: list[float] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    scenes: list[SceneTruth] = field(default_factory=list)
    duplicate_of: str | None = None


def scenes_cycle(durations: Sequence[float], offset: int = 0) -> tuple[SceneSpec, ...]:
    """Scenes of the given lengths whose colours and shapes change at every cut."""
    out = []
    for i, d in enumerate(durations):
        j = i + offset
        out.append(
            SceneSpec(
                duration_s=d,
                background=_BG_CYCLE[j % len(_BG_CYCLE)],
                shape=SHAPES[j % len(SHAPES)],
                colour=_FG_CYCLE[j % len(_FG_CYCLE)],
            )
        )
    return tuple(out)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth +-12 grey-level field twice the frame size, panned over time to give real motion."""
    small = rng.normal(0.0, 1.0, size=(max(2, height // 12), max(2, width // 12))).astype(np.float32)
    big = cv2.resize(small, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    return np.clip(big * 8.0, -12, 12).astype(np.int16)


def _draw(
    scene: SceneSpec,
    width: int,
    height: int,
    u: float,
    tex: np.ndarray | None,
    grain: np.ndarray | None = None,
) -> np.ndarray:
    """Frame at fraction `u` (0..1) through the scene, RGB uint8."""
    bg = np.array(COLOURS[scene.background], dtype=np.int16)
    if tex is not None:
        ox = int(u * width * 0.5)
        oy = int(u * height * 0.3)
        frame = np.clip(bg[None, None, :] + tex[oy : oy + height, ox : ox + width, None], 0, 255)
        img = np.ascontiguousarray(frame.astype(np.uint8))
    else:
        img = np.empty((height, width, 3), dtype=np.uint8)
        img[:] = bg.astype(np.uint8)
    size = max(4, min(width, height) // 3)
    cx = int(size + u * (width - 2 * size))
    cy = int(height / 2 + np.sin(u * np.pi * 2) * (height / 2 - size) * 0.8)
    colour = tuple(int(c) for c in COLOURS[scene.colour])
    half = size // 2
    if scene.shape == "circle":
        cv2.circle(img, (cx, cy), half, colour, thickness=-1, lineType=cv2.LINE_AA)
    elif scene.shape == "square":
        cv2.rectangle(img, (cx - half, cy - half), (cx + half, cy + half), colour, thickness=-1)
    else:
        pts = np.array([[cx, cy - half], [cx - half, cy + half], [cx + half, cy + half]], dtype=np.int32)
        cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
    if grain is not None:
        img = np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)
    return img


def _frame_plan(spec: VideoSpec) -> tuple[list[tuple[int, float, float]], VideoTruth]:
    """Every frame as (scene index, time, fraction through scene), and the ground truth it implies."""
    plan: list[tuple[int, float, float]] = []
    truth = VideoTruth(key=spec.key, width=spec.width, height=spec.height, duration=0.0, n_frames=0)
    t0 = 0.0
    for si, scene in enumerate(spec.scenes):
        rate = scene.fps or spec.fps
        n = max(1, round(scene.duration_s * rate))
        if si > 0:
            truth.cut_frames.append(len(plan))
            truth.cut_times.append(round(t0, 6))
        start_frame = len(plan)
        for i in range(n):
            plan.append((si, t0 + i / rate, i / max(1, n - 1)))
        t_end = t0 + n / rate
        truth.scenes.append(
            SceneTruth(
                key=spec.key,
                scene=si,
                t_start=round(t0, 6),
                t_end=round(t_end, 6),
                frame_start=start_frame,
                frame_end=len(plan),
                label=scene.label,
                background=scene.background,
                shape=scene.shape,
                colour=scene.colour,
            )
        )
        t0 = t_end
    truth.duration = round(t0, 6)
    truth.n_frames = len(plan)
    truth.frame_times = [round(t, 6) for _, t, _ in plan]
    return plan, truth


def render_video(spec: VideoSpec, seed: int = 0) -> tuple[bytes, VideoTruth]:
    """Encode `spec` and return (file bytes, ground truth). Deterministic for a given seed."""
    plan, truth = _frame_plan(spec)
    rng = np.random.default_rng(seed)
    textures = [
        _texture(rng, spec.width, spec.height) if spec.texture and spec.codec != "gif" else None
        for _ in spec.scenes
    ]
    # A small pool of noise frames in a seeded order: grain without a random draw per pixel per frame.
    pool = (
        [rng.normal(0, spec.grain, (spec.height, spec.width, 1)).astype(np.int16) for _ in range(6)]
        if spec.grain > 0
        else []
    )
    order = rng.integers(0, max(1, len(pool)), size=len(plan))
    frames = (
        _draw(spec.scenes[si], spec.width, spec.height, u, textures[si], pool[order[i]] if pool else None)
        for i, (si, _t, u) in enumerate(plan)
    )
    if spec.codec == "gif":
        return _encode_gif(frames, [t for _, t, _ in plan], truth.duration), truth
    return _encode_av(spec, frames, [t for _, t, _ in plan]), truth


def _encode_gif(frames, times: list[float], duration: float) -> bytes:
    images = [Image.fromarray(f) for f in frames]
    ends = [*times[1:], duration]
    # GIF delays are whole centiseconds; Pillow takes milliseconds.
    durations = [max(20, round((e - t) * 1000)) for t, e in zip(times, ends, strict=True)]
    buf = io.BytesIO()
    images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False
    )
    return buf.getvalue()


def _container_format(key: str) -> str:
    ext = Path(key).suffix.lower()
    return {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(ext) or _bad_ext(key)


def _bad_ext(key: str) -> str:
    raise ValueError(f"cannot write {key!r}: use .mp4, .mov, .mkv, .webm or .gif")


def _encode_av(spec: VideoSpec, frames, times: list[float]) -> bytes:
    fmt = _container_format(spec.key)
    vfr = any(s.fps for s in spec.scenes)
    # PyAV needs a seekable file for mp4/mov (the moov atom is written at the end).
    fd, tmp = tempfile.mkstemp(suffix=Path(spec.key).suffix)
    os.close(fd)
    try:
        with av.open(tmp, "w", format=fmt) as out:
            rate = Fraction(spec.fps).limit_denominator(1001)
            stream = out.add_stream(spec.codec, rate=rate)
            assert isinstance(stream, av.video.stream.VideoStream)  # a video codec gives a video stream
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
            gop = max(1, round(spec.gop_s * spec.fps))
            stream.codec_context.gop_size = gop
            if spec.codec == "libx264":
                stream.options = {"preset": "veryfast", "crf": str(spec.crf), "g": str(gop), "bf": "2"}
                if vfr:
                    stream.options["keyint_min"] = "1"
            elif spec.codec in ("libvpx", "libvpx-vp9"):
                stream.options = {
                    "crf": str(max(4, spec.crf)),
                    "b": "1M",
                    "deadline": "realtime",
                    "cpu-used": "8",
                }
            else:
                stream.codec_context.bit_rate = 1_000_000
            time_base = Fraction(1, 1000) if vfr else (1 / rate)
            if vfr:
                stream.codec_context.time_base = time_base
            for img, t in zip(frames, times, strict=True):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = round(t / time_base)
                frame.time_base = time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def reencode(data: bytes, key: str, scale: float = 0.6, crf: int = 32) -> bytes:
    """A near-duplicate: decode `data` and encode it again smaller and at a lower quality."""
    return _transcode(data, key, scale=scale, crf=crf)


def trim(data: bytes, key: str, start_s: float, end_s: float | None = None) -> bytes:
    """A near-duplicate that overlaps its source: the frames from `start_s` to `end_s` (seconds) only,
    encoded again (h264, the source's size), with time starting at 0."""
    return _transcode(data, key, crf=28, start_s=start_s, end_s=end_s)


def _transcode(
    data: bytes, key: str, *, scale: float = 1.0, crf: int, start_s: float = 0.0, end_s: float | None = None
) -> bytes:
    """`data`'s frames from `start_s` to `end_s`, scaled by `scale`, encoded again as h264 at `crf`."""
    fd, src = tempfile.mkstemp(suffix=".src")
    os.close(fd)
    fd, dst = tempfile.mkstemp(suffix=Path(key).suffix)
    os.close(fd)
    try:
        Path(src).write_bytes(data)
        with av.open(src) as inp, av.open(dst, "w", format=_container_format(key)) as out:
            ist = inp.streams.video[0]
            rate = ist.average_rate or Fraction(25)
            w = max(2, int(ist.codec_context.width * scale) // 2 * 2)
            h = max(2, int(ist.codec_context.height * scale) // 2 * 2)
            ost = out.add_stream("libx264", rate=rate)
            ost.width, ost.height, ost.pix_fmt = w, h, "yuv420p"
            ost.options = {"preset": "veryfast", "crf": str(crf)}
            kept = 0
            for frame in inp.decode(ist):
                t = float(frame.time) if frame.time is not None else 0.0
                if t < start_s or (end_s is not None and t >= end_s):
                    continue
                cut = frame.reformat(width=w, height=h, format="yuv420p")
                cut.pts = kept
                cut.time_base = 1 / rate
                kept += 1
                for packet in ost.encode(cut):
                    out.mux(packet)
            for packet in ost.encode():
                out.mux(packet)
        if not kept:
            raise ValueError(f"trimming {key!r} to {start_s}-{end_s} s leaves no frames")
        return Path(dst).read_bytes()
    finally:
        os.unlink(src)
        os.unlink(dst)


def default_specs(prefix: str = "videos") -> list[VideoSpec]:
    """The CI corpus: ~10 small videos, a few seconds each, covering the awkward cases."""
    p = prefix.rstrip("/")
    return [
        VideoSpec(f"{p}/cuts_a.mp4", 320, 240, 30, scenes_cycle([1.5, 2.0, 1.0, 1.5], 0)),
        VideoSpec(f"{p}/cuts_b.mp4", 256, 144, 25, scenes_cycle([1.2, 1.6, 1.2], 3), gop_s=1.0),
        VideoSpec(f"{p}/cuts_c.webm", 240, 160, 24, scenes_cycle([1.0, 1.5, 1.5], 5), codec="libvpx"),
        VideoSpec(f"{p}/cuts_d.mkv", 192, 144, 30, scenes_cycle([1.0, 1.0, 1.0, 1.0], 2)),
        VideoSpec(f"{p}/cuts_e.mov", 200, 150, 30, scenes_cycle([1.5, 1.5], 7), codec="mpeg4"),
        # One shot, longer than a test's max_scene_s: must come out as fixed windows.
        VideoSpec(f"{p}/single_shot.mp4", 160, 120, 25, scenes_cycle([8.0], 1), gop_s=4.0),
        VideoSpec(f"{p}/short.mp4", 160, 120, 30, scenes_cycle([0.6], 4)),
        VideoSpec(f"{p}/odd_size.webm", 175, 97, 24, scenes_cycle([1.2, 1.2, 1.0], 6), codec="libvpx"),
        VideoSpec(f"{p}/odd_444.mkv", 161, 121, 25, scenes_cycle([1.0, 1.2], 8), pix_fmt="yuv444p"),
        VideoSpec(
            f"{p}/vfr.mkv",
            224,
            160,
            30,
            (
                SceneSpec(1.5, "blue", "circle", "red", fps=30),
                SceneSpec(1.6, "yellow", "square", "blue", fps=15),
                SceneSpec(1.5, "black", "triangle", "white", fps=24),
            ),
        ),
        VideoSpec(f"{p}/anim.gif", 160, 120, 10, scenes_cycle([1.2, 1.5, 1.3], 1), codec="gif"),
        VideoSpec(f"{p}/anim_odd.gif", 121, 91, 20, scenes_cycle([1.0, 1.0], 4), codec="gif"),
    ]


def varied_specs(
    n: int, prefix: str = "varied", seed: int = 0, duration_s: tuple[float, float] = (12.0, 24.0)
) -> list[VideoSpec]:
    """`n` videos that each keep an identity across their cuts, as footage of one place does.

    Each video draws a palette (3 backgrounds, 2 shape colours, 2 shapes) and cuts between scenes of
    it (1.5-5 s each), at its own size, rate and grain. Palettes overlap between videos, so a scene
    of one video often looks like a scene of another: telling two segments of a video from other
    videos' takes what the video's scenes share, not one frame. For the video encoder's evaluation.
    """
    rng = np.random.default_rng(seed)
    colours = sorted(COLOURS)
    sizes = ((160, 90), (128, 96), (144, 108), (176, 100), (120, 120))  # even: 4:2:0 h264
    out = []
    for i in range(n):
        backgrounds = rng.choice(colours, 3, replace=False).tolist()
        fg = [c for c in colours if c not in backgrounds]
        shapes = rng.choice(SHAPES, 2, replace=False).tolist()
        inks = rng.choice(fg, 2, replace=False).tolist()
        total = rng.uniform(*duration_s)
        scenes, t, last = [], 0.0, None
        while t < total - 1e-6:
            d = float(min(rng.uniform(1.5, 5.0), total - t)) if total - t > 2.0 else total - t
            choice = (str(rng.choice(backgrounds)), str(rng.choice(shapes)), str(rng.choice(inks)))
            if choice == last:  # a cut always changes something
                choice = (choice[0], choice[1], inks[0] if choice[2] == inks[1] else inks[1])
            scenes.append(SceneSpec(round(d, 3), *choice))
            t += d
            last = choice
        width, height = sizes[int(rng.integers(len(sizes)))]
        out.append(
            VideoSpec(
                f"{prefix.rstrip('/')}/v{i:03d}.mp4",
                width,
                height,
                float(rng.choice([12.0, 15.0, 24.0])),
                tuple(scenes),
                grain=float(rng.uniform(0, 6)),
            )
        )
    return out


# Near-duplicates of some of the above: (source key, duplicate key, scale, crf).
def default_duplicates(prefix: str = "videos") -> list[tuple[str, str, float, int]]:
    p = prefix.rstrip("/")
    return [
        (f"{p}/cuts_a.mp4", f"{p}/dups/cuts_a_small.mp4", 0.6, 32),
        (f"{p}/cuts_c.webm", f"{p}/dups/cuts_c_reencoded.mp4", 0.8, 30),
    ]


def _truth_lines(truth: VideoTruth) -> list[str]:
    return [json.dumps(asdict(s)) for s in truth.scenes]


def write_corpus(
    store: ObjectStore,
    prefix: str = "videos",
    specs: Sequence[VideoSpec] | None = None,
    duplicates: Sequence[tuple[str, str, float, int]] | None = None,
    labels_key: str | None = None,
) -> dict[str, VideoTruth]:
    """Write the videos, their near-duplicates and `<prefix>/labels/videos.jsonl`; return the truth by key."""
    specs = list(default_specs(prefix) if specs is None else specs)
    duplicates = list(default_duplicates(prefix) if duplicates is None else duplicates)
    truths: dict[str, VideoTruth] = {}
    blobs: dict[str, bytes] = {}
    for i, spec in enumerate(specs):
        data, truth = render_video(spec, seed=i)
        store.put(spec.key, data, content_type=_content_type(spec.key))
        truths[spec.key], blobs[spec.key] = truth, data
    for src, dst, scale, crf in duplicates:
        if src not in blobs:
            raise ValueError(f"near-duplicate {dst!r} names {src!r}, which is not in the corpus")
        store.put(dst, reencode(blobs[src], dst, scale, crf), content_type=_content_type(dst))
        base = truths[src]
        dup = VideoTruth(**{**asdict(base), "scenes": [], "key": dst, "duplicate_of": src})
        dup.width, dup.height = (max(2, int(n * scale) // 2 * 2) for n in (base.width, base.height))
        dup.scenes = [SceneTruth(**{**asdict(s), "key": dst, "duplicate_of": src}) for s in base.scenes]
        truths[dst] = dup
    lines = [line for t in truths.values() for line in _truth_lines(t)]
    key = labels_key or f"{prefix.rstrip('/')}/{LABELS_KEY}"
    # The full truth (cut frames, frame times) first, the labels last: labels present = corpus complete.
    store.put(
        _truth_key(prefix), json.dumps([asdict(t) for t in truths.values()]).encode(), "application/json"
    )
    store.put(key, ("\n".join(lines) + "\n").encode(), content_type="application/x-ndjson")
    return truths


def _truth_key(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/{TRUTH_KEY}"


def load_truths(store: ObjectStore, prefix: str = "videos") -> dict[str, VideoTruth]:
    """The ground truth `write_corpus` wrote under `prefix`."""
    out: dict[str, VideoTruth] = {}
    for item in json.loads(store.get(_truth_key(prefix))):
        scenes = [SceneTruth(**s) for s in item.pop("scenes")]
        out[item["key"]] = VideoTruth(**item, scenes=scenes)
    return out


def ensure_corpus(store: ObjectStore, prefix: str = "videos") -> dict[str, VideoTruth]:
    """The default corpus under `prefix`, written only if it is not there yet (tests share one copy)."""
    if store.exists(f"{prefix.rstrip('/')}/{LABELS_KEY}") and store.exists(_truth_key(prefix)):
        return load_truths(store, prefix)
    return write_corpus(store, prefix)


def _content_type(key: str) -> str:
    ext = Path(key).suffix.lower()
    return {
        ".mp4": "video/mp4",
        ".mov": "video/quicktime",
        ".mkv": "video/x-matroska",
        ".webm": "video/webm",
        ".gif": "image/gif",
    }.get(ext, "application/octet-stream")


def benchmark_spec(key: str, width: int, height: int, duration_s: float = 24.0, fps: float = 30) -> VideoSpec:
    """A longer video for the benchmark: a scene every ~2-5 s, textured, 2 s GOP like streaming encodes."""
    lengths, total, i = [], 0.0, 0
    while total < duration_s - 1e-6:
        d = min(2.0 + (i * 7 % 4), duration_s - total)
        lengths.append(d)
        total += d
        i += 1
    return VideoSpec(key, width, height, fps, scenes_cycle(lengths), crf=23, gop_s=2.0, grain=3.0)


# Failure cases for tests: each is something a real bucket holds sooner or later.
def write_zero_length(store: ObjectStore, key: str) -> None:
    store.put(key, b"")


def write_truncated(store: ObjectStore, key: str, source: bytes, fraction: float = 0.4) -> None:
    store.put(key, source[: max(1, int(len(source) * fraction))])


def write_not_a_video(store: ObjectStore, key: str) -> None:
    store.put(key, b"this is a text file that only looks like a video by its name\n" * 20)


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write the synthetic video corpus into a store.")
    parser.add_argument("store", help="folder or s3://bucket/prefix")
    parser.add_argument("--prefix", default="videos")
    args = parser.parse_args(argv)
    from mediasearch.core.storage import open_store

    store = open_store(args.store)
    truths = write_corpus(store, args.prefix)
    where = store.display_root
    print(f"wrote {len(truths)} videos under {where}/{args.prefix}")


if __name__ == "__main__":
    main()
