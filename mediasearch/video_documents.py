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

from mediasearch.models.clip import l2_normalise
from mediasearch.records import DocKind, IndexDocument, TransformResult, VideoRecord, stable_id


def scene_id(video_uri: str, scene: int) -> str:
    return stable_id(f"{video_uri}#scene={scene}")


@dataclass
class VideoDocuments:
    video: IndexDocument | None
    scenes: list[IndexDocument] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # scenes left out, and why


def build_video_documents(record: VideoRecord, frames: Sequence[TransformResult]) -> VideoDocuments:
    """Scene and video documents for one video; scenes whose frames all failed are left out."""
    by_scene: dict[int, list[np.ndarray]] = defaultdict(list)
    model = None
    for frame in frames:
        if frame.ok and frame.clip is not None and frame.scene is not None:
            by_scene[frame.scene].append(frame.clip)
            model = model or frame.model
    out = VideoDocuments(video=None)
    scene_vectors: list[np.ndarray] = []
    weights: list[float] = []
    for span in record.scenes:
        vectors = by_scene.get(span.scene)
        if not vectors:
            out.problems.append(f"scene {span.scene} has no embedded frame")
            continue
        vector = l2_normalise(np.mean(np.stack(vectors), axis=0))
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
    out.video = IndexDocument(
        id=record.video_id,
        kind=DocKind.VIDEO,
        uri=record.uri,
        video_id=record.video_id,
        thumbnail=out.scenes[0].thumbnail,
        strip=record.strip,
        width=record.width,
        height=record.height,
        duration=record.duration,
        scene_count=len(out.scenes),
        fingerprint=record.fingerprint,
        model=model,
        clip_vector=video_vector,
    )
    return out
