"""The mistakes a new user makes in the first hour, run as that user runs them: `.venv/bin/mediasearch`
in a subprocess. Each must end with the right exit code and one clear message (one short paragraph at
most), never a traceback (issue 11).

Most cases stop before anything heavy is imported; the ones that need an index share one, built once by
`mediasearch ingest` with the tiny random CLIP, the way `make demo-offline` builds the demo's (the model
named only at ingest time: later commands follow the index's own model).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import image_bytes

MEDIASEARCH = Path(sys.executable).with_name("mediasearch")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def messages(self) -> list[str]:
        """stderr without progress bars and the index library's own warnings."""
        return [
            line
            for line in self.stderr.splitlines()
            if line.strip()
            and "%|" not in line
            and "lance::" not in line
            and not line.startswith("building generation")
        ]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASEARCH_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(home / "hf"),  # an empty cache: nothing can be loaded from the hub
        MEDIASEARCH_DEVICE="cpu",
        MEDIASEARCH_LANCEDB_URI=str(home / "index"),
        MEDIASEARCH_STORE=str(home / "data"),
        COLUMNS="120",
    )
    env.update(extra)
    return env


def mediasearch(*args: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> Run:
    started = time.perf_counter()
    proc = subprocess.run(
        [str(MEDIASEARCH), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Run(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def assert_mistake(run: Run, code: int, message: str, max_lines: int = 1) -> None:
    assert "Traceback" not in run.output, run.output
    assert run.code == code, run.output
    assert message in run.stderr, run.output
    assert 1 <= len(run.messages) <= max_lines, run.messages


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[Path, dict[str, str]]:
    """A folder of images and a short video, ingested with the tiny model named at ingest time only."""
    from mediasearch.core.storage import LocalStore
    from mediasearch.corpus.videos import default_specs, write_corpus

    home = tmp_path_factory.mktemp("user")
    store = LocalStore(home / "photos")
    for n, colour in enumerate([(220, 20, 30), (20, 200, 40), (30, 40, 220)]):
        store.put(f"img-{n}.png", image_bytes(colour))
    short = [s for s in default_specs("videos") if s.key.endswith("short.mp4")]
    write_corpus(store, "videos", specs=short, duplicates=[])
    env = clean_env(home)
    run = mediasearch("ingest", "photos", cwd=home, env={**env, "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir)})
    assert run.code == 0 and "Traceback" not in run.output, run.output
    return home, env


# ---- command line mistakes, before anything is loaded ----------------------------------------------------

NO_INDEX = [
    (("ingest", "/nonexistent"), 2, "no such folder: /nonexistent"),
    (("ingest", "holiday/beach.jpg"), 2, "no such file: holiday/beach.jpg"),
    (("ingest", ""), 2, "give a folder"),
    (("ingest", "file://other-host/photos"), 2, "must name a path on this machine"),
    (("preprocess", "/nonexistent"), 2, "no such folder: /nonexistent"),
    (("transform", "/nonexistent"), 2, "no such folder: /nonexistent"),
    (("load", "/nonexistent"), 2, "no such folder: /nonexistent"),
    (("search",), 2, "give a text query, --image FILE or --video ID"),
    (("search", "a cat", "--image", "cat.png"), 2, "give one query, not TEXT and --image"),
    (("search", "--image", "nope.jpg"), 2, "no such file: nope.jpg"),
    (("search", "--image", "."), 2, "is a folder, not an image"),
    (("search", "   "), 2, "TEXT: text is blank"),
    (("search", "a cat", "--k", "1000"), 2, "--k: Input should be less than or equal to 100"),
    (("search", "a cat", "--kind", "audio"), 2, "Invalid value for '--kind'"),
    (("search", "--colour", "red"), 2, "No such option: --colour"),
    (("search", "a cat"), 1, "there is no index at"),
    (("similar", "abc"), 1, "there is no index at"),
    (("eval",), 1, "no labels at"),
    (("generations", "list"), 1, "there is no index at"),
    (("serve", "--port", "80000"), 2, "--port must be between 1 and 65535, not 80000"),
    (("serve",), 1, "there is no index at"),
    (("random-model", "m", "--size", "huge"), 2, "--size must be tiny or base"),
    (("frobnicate",), 2, "No such command 'frobnicate'"),
]


@pytest.fixture(scope="module")
def no_index_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], tuple[Run, Path]]:
    """Every NO_INDEX case, each in a home of its own, a few at a time: they are independent, and
    most of each one's time is the interpreter starting."""

    homes = {args: tmp_path_factory.mktemp("mistake") for args, _, _ in NO_INDEX}  # mktemp is not thread-safe

    def one(args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[Run, Path]]:
        home = homes[args]
        (home / "work").mkdir()
        return args, (mediasearch(*args, cwd=home / "work", env=clean_env(home)), home)

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, list(homes)))


@pytest.mark.parametrize(
    ("args", "code", "message"), NO_INDEX, ids=[" ".join(a) or "''" for a, _, _ in NO_INDEX]
)
def test_a_mistake_is_one_line(
    no_index_runs: dict[tuple[str, ...], tuple[Run, Path]], args: tuple[str, ...], code: int, message: str
) -> None:
    run, home = no_index_runs[args]
    assert_mistake(run, code, message)
    # A read never creates anything: no index folder, no default data folder.
    assert not (home / "index").exists() and not (home / "work" / "mediasearch-data").exists()


@pytest.mark.parametrize(
    "args", [("search", "a cat"), ("similar", "abc"), ("eval",), ("generations", "list")]
)
def test_an_index_folder_without_the_collection(home: Path, args: tuple[str, ...]) -> None:
    (home / "index").mkdir()
    (home / "data" / "demo" / "images").mkdir(parents=True)
    (home / "data" / "demo" / "images" / "labels.jsonl").write_text("")
    run = mediasearch(*args, cwd=home / "work", env=clean_env(home))
    assert "Traceback" not in run.output and run.code == 1, run.output
    expected = "has no generations yet" if args[0] == "generations" else "no index at"
    assert expected in run.stderr and len(run.messages) == 1, run.output
    assert list((home / "index").iterdir()) == []  # still nothing: a read never writes


def test_a_file_that_is_not_media(home: Path) -> None:
    (home / "work" / "notes.txt").write_text("hello")
    run = mediasearch("ingest", "notes.txt", cwd=home / "work", env=clean_env(home))
    assert_mistake(run, 2, "notes.txt is not an image or a video")


def test_a_stage_command_given_a_file(home: Path) -> None:
    (home / "work" / "a.png").write_bytes(image_bytes((1, 2, 3)))
    run = mediasearch("transform", "a.png", cwd=home / "work", env=clean_env(home))
    assert_mistake(run, 2, "a.png is a file: give the folder that holds it")


def test_a_bad_setting_names_the_variable(home: Path) -> None:
    (home / "work" / "photos").mkdir()
    env = clean_env(home, MEDIASEARCH_BATCH_SIZE="lots")
    run = mediasearch("ingest", "photos", cwd=home / "work", env=env)
    assert_mistake(run, 2, "invalid setting MEDIASEARCH_BATCH_SIZE='lots'")


def test_an_empty_api_key_stops_the_server(home: Path, indexed: tuple[Path, dict[str, str]]) -> None:
    _, env = indexed
    run = mediasearch("serve", "--port", "1", cwd=home / "work", env={**env, "MEDIASEARCH_API_KEY": ""})
    assert_mistake(run, 2, "MEDIASEARCH_API_KEY is set but empty")


def test_an_empty_folder_says_so(home: Path, tiny_clip_dir: Path) -> None:
    (home / "work" / "empty").mkdir()
    env = clean_env(home, MEDIASEARCH_CLIP_MODEL=str(tiny_clip_dir))
    run = mediasearch("ingest", "empty", cwd=home / "work", env=env)
    assert "Traceback" not in run.output and run.code == 1, run.output
    assert "empty holds no images or videos to ingest" in run.stderr


# ---- item 3: no network, the default hub model -------------------------------------------------------------


def test_without_network_the_default_model_is_one_paragraph(home: Path) -> None:
    photos = home / "work" / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(image_bytes((200, 10, 10)))
    run = mediasearch("ingest", "photos", cwd=home / "work", env=clean_env(home))
    assert "Traceback" not in run.output and run.code == 1, run.output
    text = "\n".join(run.messages)
    assert "'openai/clip-vit-base-patch32'" in text and "HF_HUB_OFFLINE is set" in text
    assert "make demo-offline" in text and "MEDIASEARCH_CLIP_MODEL=" in text
    assert ".." not in text.replace("...", "")  # the doubled full stop
    assert len(run.messages) <= 4, run.messages


# ---- with an index: the model follows the index, mistakes in queries ----------------------------------------


def test_search_follows_the_model_the_index_was_built_with(
    indexed: tuple[Path, dict[str, str]], tiny_clip_dir: Path
) -> None:
    home, env = indexed
    run = mediasearch(
        "search", "a red thing", "--kind", "image", "--k", "3", cwd=home, env=env
    )  # no model set
    assert run.code == 0 and "Traceback" not in run.output, run.output
    assert f"loading the query model {tiny_clip_dir}" in run.stderr
    first = run.stdout.splitlines()[0].split()
    assert first[0] == "1." and first[2] == "image" and len(first[3]) == 20  # rank, score, kind, id, uri


def test_similar_takes_an_id_from_plain_search_output(indexed: tuple[Path, dict[str, str]]) -> None:
    home, env = indexed
    found = mediasearch("search", "a video", "--kind", "video", "--k", "1", cwd=home, env=env)
    video_id = found.stdout.splitlines()[0].split()[3]
    run = mediasearch("similar", video_id, cwd=home, env=env)
    assert run.code == 0 and "Traceback" not in run.output, run.output
    assert "loading" not in run.stderr  # a video query reads stored vectors: no model


def test_similar_with_an_unknown_id_is_fast_and_loads_no_model(indexed: tuple[Path, dict[str, str]]) -> None:
    home, env = indexed
    run = mediasearch("similar", "0123456789abcdef0123", cwd=home, env=env)
    assert_mistake(run, 2, "no video with id '0123456789abcdef0123'")
    assert "loading" not in run.stderr
    assert run.seconds < 15  # was 14 s for the model alone; now start-up and one read


def test_an_image_that_is_not_one(indexed: tuple[Path, dict[str, str]]) -> None:
    home, env = indexed
    (home / "fake.png").write_text("not an image")
    run = mediasearch("search", "--image", "fake.png", cwd=home, env=env)
    assert "Traceback" not in run.output and run.code == 2, run.output
    assert "image: not a recognised image format" in run.stderr


def test_a_thin_query_image_is_refused(indexed: tuple[Path, dict[str, str]]) -> None:
    home, env = indexed
    thin = base64.b64decode(base64.b64encode(image_bytes((9, 9, 9), size=(1, 400))))
    (home / "thin.png").write_bytes(thin)
    run = mediasearch("search", "--image", "thin.png", cwd=home, env=env)
    assert "Traceback" not in run.output and run.code == 2, run.output
    assert "differ by more than 20:1" in run.stderr


def test_a_single_file_is_ingested_as_itself(
    indexed: tuple[Path, dict[str, str]], tiny_clip_dir: Path
) -> None:
    home, env = indexed
    loose = home / "loose"
    loose.mkdir()
    (loose / "one.png").write_bytes(image_bytes((5, 200, 200)))
    (loose / "other.png").write_bytes(image_bytes((200, 5, 200)))
    run = mediasearch(
        "ingest", "loose/one.png", cwd=home, env={**env, "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir)}
    )
    assert run.code == 0 and "Traceback" not in run.output, run.output
    assert "scanned 1," in run.stdout and "added 1," in run.stdout
    listed = mediasearch("search", "anything", "--k", "100", "--kind", "image", cwd=home, env=env)
    assert "loose/one.png" in listed.stdout and "loose/other.png" not in listed.stdout
    assert "photos/img-0.png" in listed.stdout  # the folder ingested before is untouched
