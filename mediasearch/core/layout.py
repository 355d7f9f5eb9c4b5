"""The work area: where every artefact of a source lives, computed here and nowhere else.

A source (a folder, or an S3 prefix) keeps its derived files in one work area beside the media, by
default `<source>/_mediasearch/` (`root` below; `vid` is a video's id, `tag` a model tag):

    root/manifests/images-<hash>.jsonl              image manifest lines, named by their content
    root/manifests/frames-<vid>-<fp>[-p<n>].jsonl   a video's frame manifests; <fp> hashes its fingerprint
    root/outputs/<tag>/<manifest name>.out          transform output of a manifest, per model
    root/frames/<vid>/s<scene>_<ms>.jpg             sampled frames (what the transform embeds)
    root/thumbs/<vid>/s<scene>.jpg                  one keyframe thumbnail per scene
    root/strips/<vid>.jpg                           the scene thumbnails side by side
    root/videos/<vid>.json                          the video's sidecar (`VideoRecord`), its commit mark
    root/jobs/<job>.manifest                        SageMaker manifest files listing pending manifests
    root/failures.json                              objects that failed, skipped until they change

Outputs sit under `outputs/<tag>/` for the local runner and SageMaker alike (SageMaker writes
`S3OutputPath` + the input's path relative to the input prefix + `.out`, so pointing `S3OutputPath` at
`outputs/<tag>/` gives the same keys). Keying them by model means a model change never reuses an old
embedding, and one sweep (`orphaned_outputs`) finds outputs whose manifest is gone.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# The work area's folder name inside a source.
WORK_DIR = "_mediasearch"
MANIFEST_SUFFIX = ".jsonl"
OUTPUT_SUFFIX = ".out"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def short_hash(text: str, length: int = 10) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


def model_tag(*model_ids: str | None) -> str:
    """A key-safe, stable folder name for the model(s) that produced an output.

    Readable (the last path or hub-id component) and unique (a hash of the full ids), so two models
    whose names end alike never share outputs.
    """
    ids = [m for m in model_ids if m]
    if not ids:
        raise ValueError("an output needs the id of the model that produced it")
    readable = "+".join(_UNSAFE.sub("-", m.rstrip("/").rsplit("/", 1)[-1]).strip("-.")[:40] for m in ids)
    return f"{readable or 'model'}-{short_hash('|'.join(ids), 8)}"


def _ms(t: float) -> int:
    return round(t * 1000)


class WorkLayout:
    """Every key under one work area; see the module docstring for the picture."""

    def __init__(self, root: str) -> None:
        self.root = root.strip("/")
        if not self.root:
            raise ValueError(
                "the work area must not be the store's root: artefacts would mix with the sources"
            )

    @classmethod
    def for_source(cls, prefix: str = "", work_dir: str = WORK_DIR) -> WorkLayout:
        """The work area of the media under `prefix` (a key prefix inside the store, "" for all)."""
        work_dir = work_dir.strip("/")
        if not work_dir:
            raise ValueError("the work folder name must not be empty")
        prefix = prefix.strip("/")
        return cls(f"{prefix}/{work_dir}" if prefix else work_dir)

    def __repr__(self) -> str:
        return f"WorkLayout({self.root!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkLayout) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # -- the area as a whole ---------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """Key prefix of everything in the area (with the trailing slash)."""
        return f"{self.root}/"

    def contains(self, key: str) -> bool:
        return key.startswith(self.prefix)

    # -- manifests -------------------------------------------------------------------------------

    @property
    def manifests_dir(self) -> str:
        return f"{self.root}/manifests/"

    def is_manifest(self, key: str) -> bool:
        return key.startswith(self.manifests_dir) and key.endswith(MANIFEST_SUFFIX)

    def image_manifest(self, body: bytes, name: str = "images") -> str:
        """Named by the hash of its lines: the same pending work always lands in the same file."""
        return f"{self.manifests_dir}{name}-{hashlib.sha1(body).hexdigest()[:16]}{MANIFEST_SUFFIX}"

    def frame_manifests_of(self, vid: str) -> str:
        """Prefix of every frame manifest this video ever had (any fingerprint)."""
        return f"{self.manifests_dir}frames-{vid}-"

    def frame_manifest(self, vid: str, fingerprint: str | None, part: int = 0) -> str:
        # The fingerprint's hash is in the name, so a changed video gets new manifests (and new
        # outputs) while an unchanged one keeps its own.
        suffix = f"-p{part}" if part else ""
        return f"{self.frame_manifests_of(vid)}{short_hash(fingerprint or '')}{suffix}{MANIFEST_SUFFIX}"

    def frame_manifest_parts(self, vid: str, fingerprint: str | None, keys: Iterable[str]) -> list[str]:
        """Of `keys`, the manifests of this video at this fingerprint (all parts), sorted."""
        first = self.frame_manifest(vid, fingerprint)
        stem = first[: -len(MANIFEST_SUFFIX)]
        return sorted(
            k for k in keys if k.endswith(MANIFEST_SUFFIX) and (k == first or k.startswith(stem + "-p"))
        )

    def job_manifest(self, job_name: str) -> str:
        return f"{self.root}/jobs/{job_name}.manifest"

    def failures(self) -> str:
        """The source's known-bad objects (`mediasearch.indexing.failures`)."""
        return f"{self.root}/failures.json"

    # -- transform outputs -----------------------------------------------------------------------

    @property
    def outputs_root(self) -> str:
        return f"{self.root}/outputs/"

    def outputs_dir(self, tag: str) -> str:
        return f"{self.outputs_root}{tag}/"

    def output(self, manifest_key: str, tag: str) -> str:
        """The output of a manifest for the model `tag` (where the local runner and SageMaker write it)."""
        return f"{self.outputs_dir(tag)}{self.manifest_relpath(manifest_key)}{OUTPUT_SUFFIX}"

    def manifest_relpath(self, manifest_key: str) -> str:
        if not self.is_manifest(manifest_key):
            raise ValueError(f"{manifest_key!r} is not a manifest of the work area {self.root!r}")
        return manifest_key[len(self.manifests_dir) :]

    def is_output(self, key: str) -> bool:
        return key.startswith(self.outputs_root) and key.endswith(OUTPUT_SUFFIX)

    def manifest_of_output(self, output_key: str) -> str:
        """The manifest an output was made from (whatever the model)."""
        if not self.is_output(output_key):
            raise ValueError(f"{output_key!r} is not a transform output of the work area {self.root!r}")
        rest = output_key[len(self.outputs_root) :]
        _tag, _, rel = rest.partition("/")
        return f"{self.manifests_dir}{rel[: -len(OUTPUT_SUFFIX)]}"

    def orphaned_outputs(self, keys: Iterable[str]) -> list[str]:
        """Of every key in the area, the outputs whose manifest no longer exists (stale: delete them)."""
        keys = list(keys)
        manifests = {k for k in keys if self.is_manifest(k)}
        return sorted(k for k in keys if self.is_output(k) and self.manifest_of_output(k) not in manifests)

    # -- video artefacts -------------------------------------------------------------------------

    def frames_dir(self, vid: str) -> str:
        return f"{self.root}/frames/{vid}/"

    def frame(self, vid: str, scene: int, t: float) -> str:
        return f"{self.frames_dir(vid)}s{scene}_{_ms(t)}.jpg"

    def thumbs_dir(self, vid: str) -> str:
        return f"{self.root}/thumbs/{vid}/"

    def thumb(self, vid: str, scene: int) -> str:
        return f"{self.thumbs_dir(vid)}s{scene}.jpg"

    def strip(self, vid: str) -> str:
        return f"{self.root}/strips/{vid}.jpg"

    @property
    def sidecars_dir(self) -> str:
        return f"{self.root}/videos/"

    def sidecar(self, vid: str) -> str:
        return f"{self.sidecars_dir}{vid}.json"

    def video_artefact_prefixes(self, vid: str) -> tuple[str, ...]:
        """Every prefix holding artefacts of one video, except its sidecar, strip and outputs."""
        return (self.frames_dir(vid), self.thumbs_dir(vid), self.frame_manifests_of(vid))

    def video_of(self, key: str) -> str | None:
        """The id of the video `key` is an artefact of (frame, thumbnail, strip, sidecar or frame
        manifest), or None for any other key: how a sweep finds artefacts of videos that are gone."""
        for folder in ("frames", "thumbs"):
            head = f"{self.root}/{folder}/"
            if key.startswith(head) and "/" in key[len(head) :]:
                return key[len(head) :].split("/", 1)[0] or None
        for head, tail in ((f"{self.root}/strips/", ".jpg"), (self.sidecars_dir, ".json")):
            if key.startswith(head) and key.endswith(tail) and "/" not in key[len(head) :]:
                return key[len(head) : -len(tail)] or None
        head = f"{self.manifests_dir}frames-"
        if key.startswith(head) and key.endswith(MANIFEST_SUFFIX):
            # Video ids are hex digests: the first '-' after the id starts the fingerprint's hash.
            return key[len(head) :].split("-", 1)[0] or None
        return None
