"""From a preprocessed video and its frame embeddings to index documents.

frame vectors -> scene vector (mean, re-normalised) -> video vector (duration-weighted mean of the
scene vectors, re-normalised). Means of unit vectors are re-normalised so that every stored vector is
a unit vector and inner product stays cosine similarity on every backend.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mediasearch.core.records import DocKind, IndexDocument, TransformResult, VideoRecord, stable_id
from mediasearch.core.vectors import l2_normalise
from mediasearch.indexing.tags import aggregate_tags, summarise


def scene_id(video_uri: str, scene: int) -> str:
    return stable_id(f"{video_uri}#scene={scene}")


@dataclass
class VideoDocuments:
    video: IndexDocument | None
    scenes: list[IndexDocument] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scenes left out, and why


@dataclass(frozen=True)
class TagOptions:
    """Video tags: the `top_n` tags carried by at least `min_frames` frame captions."""

    top_n: int = 10
    min_frames: int = 2


def build_video_documents(
    record: VideoRecord, frames: Sequence[TransformResult], tags: TagOptions = TagOptions()
) -> VideoDocuments:
    """Scene and video documents for one video; scenes whose frames all failed are left out.

    With captioned frames, a scene's caption is its frames' distinct captions and its tags those
    of any of its frames; the video's tags are counted over all frames, and its caption is a
    summary: the frame caption that best covers those tags.
    """
    by_scene: dict[int, list[np.ndarray]] = defaultdict(list)
    captions: dict[int, list[str]] = defaultdict(list)
    model = None
    for frame in sorted(frames, key=lambda f: f.t or 0.0):
        if frame.ok and frame.clip is not None and frame.scene is not None:
            by_scene[frame.scene].append(frame.clip)
            model = model or frame.model
            if frame.caption:
                captions[frame.scene].append(frame.caption)
    out = VideoDocuments(video=None)
    scene_vectors: list[np.ndarray] = []
    weights: list[float] = []
    for span in record.scenes:
        vectors = by_scene.get(span.scene)
        if not vectors:
            out.problems.append(f"scene {span.scene} has no embedded frame")
            continue
        vector = l2_normalise(np.mean(np.stack(vectors), axis=0))
        scene_captions = captions.get(span.scene, [])
        scene_vectors.append(vector)
        weights.append(max(span.t_end - span.t_start, 1e-3))
        out.scenes.append(
            IndexDocument(
                id=scene_id(record.uri, span.scene),
                kind=DocKind.SCENE,
                uri=record.uri,
                video_id=record.video_id,
                scene=span.scene,
                t_start=span.t_start,
                t_end=span.t_end,
                thumbnail=span.thumbnail,
                caption="; ".join(dict.fromkeys(scene_captions)) or None,
                tags=[t.tag for t in aggregate_tags(scene_captions, top_n=tags.top_n, min_frames=1)],
                width=record.width,
                height=record.height,
                duration=record.duration,
                fingerprint=record.fingerprint,
                model=model,
                clip_vector=vector,
            )
        )
    if not out.scenes:
        return out
    video_vector = l2_normalise(np.average(np.stack(scene_vectors), axis=0, weights=np.asarray(weights)))
    all_captions = [c for s in out.scenes for c in captions.get(s.scene or 0, [])]
    video_tags = [t.tag for t in aggregate_tags(all_captions, top_n=tags.top_n, min_frames=tags.min_frames)]
    out.video = IndexDocument(
        id=record.video_id,
        kind=DocKind.VIDEO,
        uri=record.uri,
        video_id=record.video_id,
        thumbnail=out.scenes[0].thumbnail,
        strip=record.strip,
        caption=summarise(all_captions, video_tags) or None if all_captions else None,
        tags=video_tags,
        width=record.width,
        height=record.height,
        duration=record.duration,
        scene_count=len(out.scenes),
        fingerprint=record.fingerprint,
        content_hash=record.content_hash,
        model=model,
        clip_vector=video_vector,
    )
    return out
