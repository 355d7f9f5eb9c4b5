"""(image, text) pairs for CLIP training: the JSON Lines file, and the synthetic demo set with held-out combinations.

A pairs file has one `{"uri": ..., "text": ...}` object per line. `uri` is anything the object store
reads (`s3://bucket/key`, `file:///...`, or a path; a relative path is taken relative to the pairs
file, so a folder of images and its pairs file can be moved together). Other fields (the synthetic
corpus's labels) are kept but not needed.

`write_demo_pairs` makes a training set from the synthetic corpus (`mediasearch.corpus.images`): several
renderings (seeds) of every shape x colour x background x size, *except* some colour x shape
combinations, which appear only in the held-out file. Recall on those measures whether a model composes
"blue" and "circle" rather than memorising the pairs it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from mediasearch.core.records import stable_id
from mediasearch.core.storage import LocalStore, StoreError, open_uri
from mediasearch.corpus.images import ImageLabel, generate_images

# One held-out shape per colour and one colour per shape (a permutation), so every colour and every
# shape is still seen in training, with other partners. "red circle" (the demo's first query) stays seen.
HELDOUT_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("green", "hexagon"),
    ("blue", "circle"),
    ("yellow", "cross"),
    ("purple", "square"),
    ("orange", "star"),
)
TRAIN_NAME = "train.jsonl"
HELDOUT_NAME = "heldout.jsonl"
# Far from the training seeds (1..copies) and from the demo corpus's 0.
HELDOUT_SEED = 1000


class PairsError(ValueError):
    """A pairs file that cannot be used; the message names the file and the line."""


class ImageTextPair(BaseModel):
    """One line of a pairs file."""

    model_config = ConfigDict(extra="allow")

    uri: str
    text: str

    @property
    def id(self) -> str:
        """The id an index document of the image would have, so the eval harness can score rankings."""
        return stable_id(self.uri)


def read_pairs(path: Path, check_uris: bool = True) -> list[ImageTextPair]:
    """Parse a pairs file; relative local URIs become absolute. Every mistake names `path:line`.

    With `check_uris`, local images must exist (S3 objects are checked when they are read, which
    costs a request each).
    """
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"{path}: no such file (expected JSON Lines of {{uri, text}})")
    pairs: list[ImageTextPair] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                pair = ImageTextPair.model_validate_json(line)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise PairsError(f"{path}:{n}: {where + ': ' if where else ''}{err['msg']}") from None
            if not pair.text.strip():
                raise PairsError(f"{path}:{n}: empty text")
            uri = _resolve(pair.uri, path.parent)
            if check_uris and not uri.startswith("s3://"):
                store, key = open_uri(uri)
                if not store.exists(key):
                    raise PairsError(f"{path}:{n}: no image at {pair.uri}")
            pairs.append(pair.model_copy(update={"uri": uri}))
    if not pairs:
        raise PairsError(f"{path}: no pairs in the file")
    return pairs


def _resolve(uri: str, base: Path) -> str:
    if "://" in uri:
        return uri
    p = Path(uri).expanduser()
    return (p if p.is_absolute() else base / p).resolve().as_uri()


def write_pairs(path: Path, pairs: Sequence[BaseModel]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(p.model_dump_json() + "\n" for p in pairs), encoding="utf-8")
    return path


# How the demo's training seeds word their captions, in turn. The eval harness asks "a photo of a red
# circle" and users type "a red circle"; captions alone never say "photo", and a word the toy tokenizer
# never saw is spelt out byte by byte, so the toy model would meet its own demo queries as noise.
PHRASINGS = ("{caption}", "a photo of a {colour} {shape}", "a {size} {colour} {shape}")


def label_pair(label: ImageLabel, phrasing: str = PHRASINGS[0]) -> ImageTextPair:
    """The pair of a generated image: its caption ("a small red circle on a white background", or
    `phrasing` filled from its labels) and its labels."""
    text = phrasing.format(caption=label.caption, colour=label.colour, shape=label.shape, size=label.size)
    return ImageTextPair(uri=label.uri, text=text, **label.model_dump(exclude={"uri"}))


class DemoPairs(BaseModel):
    train: Path
    heldout: Path
    n_train: int
    n_heldout: int
    heldout_combos: list[tuple[str, str]]


def write_demo_pairs(
    dest: Path, copies: int = 10, heldout: Sequence[tuple[str, str]] = HELDOUT_COMBOS
) -> DemoPairs:
    """Render `copies` seeds of the synthetic corpus under `dest` and write `train.jsonl` and `heldout.jsonl`.

    Training pairs leave out the `heldout` (colour, shape) combinations; the held-out file has one
    rendering of each of those combinations (every background and size), from a seed no training
    image used. Images already there with the right bytes are not rewritten.
    """
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    store = LocalStore(dest)
    held = {tuple(c) for c in heldout}
    train: list[ImageTextPair] = []
    kept: list[ImageTextPair] = []
    # Rendering skips nothing (keys and pixels follow the full product); what is not used is removed,
    # with the per-folder labels files, which would list it.
    for prefix, seed, want_held, out in [
        *((f"train/seed-{s}", s, False, train) for s in range(1, copies + 1)),
        ("heldout", HELDOUT_SEED, True, kept),
    ]:
        for label in generate_images(store, prefix, seed=seed):
            if ((label.colour, label.shape) in held) == want_held:
                out.append(label_pair(label, PHRASINGS[0] if want_held else PHRASINGS[seed % len(PHRASINGS)]))
            else:
                store.path(label.key).unlink(missing_ok=True)
        store.path(f"{prefix}/labels.jsonl").unlink(missing_ok=True)
    train_path = write_pairs(Path(dest) / TRAIN_NAME, train)
    heldout_path = write_pairs(Path(dest) / HELDOUT_NAME, kept)
    return DemoPairs(
        train=train_path,
        heldout=heldout_path,
        n_train=len(train),
        n_heldout=len(kept),
        heldout_combos=sorted(held),  # type: ignore[arg-type]
    )


def read_uri_checked(uri: str) -> bytes:
    """The image's bytes; a missing object is a PairsError naming it."""
    store, key = open_uri(uri)
    try:
        return store.get(key)
    except StoreError as exc:
        raise PairsError(f"cannot read {uri}: {exc}") from None
