"""The living index between processes: racing writers, kill -9 and re-run, a model switch under load.

Every test here runs real processes: a thread inside the test process proves nothing about them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.storage import LocalStore
from tests.conftest import COLOURS, free_port, image_bytes

ROOT = Path(__file__).resolve().parents[1]

RUNS = 20

# Two of these race: a writer as small as possible (no model, no torch), the collection's writer,
# 400 new ids per run. Before each run both meet at a file barrier, so every run starts at once.
UPSERT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from pathlib import Path
    from mediasearch.core.model_identity import ModelIdentity
    from mediasearch.core.records import DocKind, IndexDocument
    from mediasearch.core.storage import LocalStore
    from mediasearch.index.base import IndexSpec
    from mediasearch.index.collection import Collection
    from mediasearch.index.generations import StoreCatalog
    from mediasearch.index.lancedb import LanceDBIndex
    from mediasearch.index.locks import FileLock

    base, me, runs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(int(me))
    for run in range(runs):
        uri = str(base / f"run{run}")
        (base / f"run{run}.{me}.ready").touch()
        while len(list(base.glob(f"run{run}.*.ready"))) < 2:
            time.sleep(0.002)
        coll = Collection(
            "media", StoreCatalog(LocalStore(uri), "media"),
            lambda: FileLock(Path(uri) / "_locks" / "media.lock", "media"),
            lambda name: LanceDBIndex(uri, name), lambda name: None,
        )
        docs = []
        for i in range(400):
            v = rng.normal(size=16).astype(np.float32)
            docs.append(IndexDocument(id=f"id{i}", kind=DocKind.IMAGE, uri=f"file:///m/{i}.png",
                                      model="m", clip_vector=v / np.linalg.norm(v)))
        with coll.writer(ModelIdentity("sha256:m", "m"), wait=True, timeout_s=60, poll_s=0.01) as w:
            w.index.create(IndexSpec(clip_dim=16))
            for start in range(0, 400, 100):
                w.index.upsert(docs[start : start + 100])
            coll.commit(w)
    """
)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def _rows_and_ids(uri: str, table: str) -> tuple[int, int]:
    import lancedb

    t = lancedb.connect(uri).open_table(table)
    ids = t.to_arrow().column("id").to_pylist()
    return len(ids), len(set(ids))


def test_racing_writers_never_duplicate(tmp_path: Path) -> None:
    """Before the writer lock: two processes upserting the same 400 new ids gave 800 rows, 8 runs of 8."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPSERT, str(tmp_path), me, str(RUNS)],
            env=_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("1", "2")
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    duplicates = []
    for run in range(RUNS):
        uri = str(tmp_path / f"run{run}")
        catalog = json.loads((Path(uri) / "_generations" / "media.json").read_text())
        rows, ids = _rows_and_ids(uri, catalog["serving"])
        assert ids == 400
        duplicates.append(rows - ids)
    assert duplicates == [0] * RUNS


def _cli(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "mediasearch"), *args]
        if (ROOT / ".venv").exists()
        else [sys.executable, "-m", "mediasearch.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=kwargs.get("cwd", ROOT),  # type: ignore[arg-type]
    )


@pytest.fixture
def corpus(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "media")
    for i in range(3):
        for name, colour in COLOURS.items():
            store.put(f"set{i}/{name}.png", image_bytes(colour, size=(40 + i, 30)))
    return store


@pytest.fixture
def cli_env(tmp_path: Path, tiny_clip_dir: Path) -> dict[str, str]:
    return _env(
        MEDIASEARCH_CLIP_MODEL=str(tiny_clip_dir),
        MEDIASEARCH_LANCEDB_URI=str(tmp_path / "lancedb"),
        MEDIASEARCH_CACHE_DIR=str(tmp_path / "cache"),
    )


def test_a_second_ingest_stops_at_once_naming_the_first_or_waits(corpus, cli_env, tmp_path) -> None:
    first = _cli(["ingest", str(corpus.root)], cli_env)
    time.sleep(0.5)
    busy = _cli(["ingest", str(corpus.root)], cli_env)
    _, err = busy.communicate(timeout=120)
    waiting = _cli(["ingest", str(corpus.root), "--wait"], cli_env)
    _, err1 = first.communicate(timeout=300)
    out3, err3 = waiting.communicate(timeout=300)
    assert first.returncode == 0, err1
    if busy.returncode != 0:  # it started while the first held the lock
        assert busy.returncode == 2 and f"is being written by pid {first.pid}" in err, err
        assert "Traceback" not in err
    assert waiting.returncode == 0, err3
    assert "unchanged 18" in out3  # it waited, then found everything done
    catalog = json.loads((tmp_path / "lancedb" / "_generations" / "media.json").read_text())
    assert _rows_and_ids(str(tmp_path / "lancedb"), catalog["serving"]) == (18, 18)


def _media(root: Path) -> LocalStore:
    from mediasearch.corpus.videos import VideoSpec, render_video, scenes_cycle

    store = LocalStore(root)
    for name, colour in COLOURS.items():
        store.put(f"img/{name}.png", image_bytes(colour, size=(40, 30)))
    data, _ = render_video(VideoSpec("clip.mp4", 160, 96, 25, scenes_cycle([1.0, 1.2], 1)), seed=3)
    store.put("video/clip.mp4", data)
    return store


def _snapshot(lancedb_uri: Path) -> tuple[str, list[tuple[object, ...]], set[str]]:
    """The serving generation: its rows (vectors rounded) and the names of its built indices.

    Rows are keyed by the media's path inside the source, not by id: ids come from full URIs, and the
    clean run's media live under another root."""
    import lancedb

    catalog = json.loads((lancedb_uri / "_generations" / "media.json").read_text())
    table = lancedb.connect(str(lancedb_uri)).open_table(catalog["serving"])
    data = table.to_arrow().to_pylist()
    rows = sorted(  # by everything but the vector, which follows its row
        [
            (
                r["kind"],
                r["uri"].rsplit("/", 2)[-2:].__str__(),  # the same media under another root
                r["fingerprint"] is not None,
                r["model"],
                r["scene"],
                r["t_start"],
                np.asarray(r["clip_vector"], np.float32),
            )
            for r in data
        ],
        key=lambda row: row[:-1],
    )
    return catalog["serving"], rows, {ix.name for ix in table.list_indices()}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[str, list, set[str]]:
    root = tmp_path_factory.mktemp("clean")
    _media(root / "media")
    env = _env(MEDIASEARCH_CLIP_MODEL=str(tiny_clip_dir), MEDIASEARCH_LANCEDB_URI=str(root / "lancedb"))
    done = subprocess.run(
        [sys.executable, "-m", "mediasearch.cli", "ingest", str(root / "media")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return _snapshot(root / "lancedb")


@pytest.mark.parametrize(
    "point", ["after-preprocess", "after-transform", "mid-load", "after-load", "before-switch"]
)
def test_kill_9_at_each_stage_then_rerun_equals_a_clean_run(
    point: str, tmp_path: Path, tiny_clip_dir: Path, clean_run
) -> None:
    _media(tmp_path / "media")
    env = _env(MEDIASEARCH_CLIP_MODEL=str(tiny_clip_dir), MEDIASEARCH_LANCEDB_URI=str(tmp_path / "lancedb"))
    command = [sys.executable, "-m", "mediasearch.cli", "ingest", str(tmp_path / "media")]
    killed = subprocess.run(
        command, env={**env, "MEDIASEARCH_FAILPOINT": point}, capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL, as kill -9 would
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    generation, rows, indices = _snapshot(tmp_path / "lancedb")
    clean_generation, clean_rows, clean_indices = clean_run
    assert generation == clean_generation
    assert [row[:-1] for row in rows] == [row[:-1] for row in clean_rows]
    for row, clean in zip(rows, clean_rows, strict=True):
        # The same model on the same inputs; only batch composition (and so float rounding) differs,
        # which moves a mean of frame vectors by ~1e-4 per component: the direction is what must agree.
        cosine = float(np.dot(row[-1], clean[-1]) / (np.linalg.norm(row[-1]) * np.linalg.norm(clean[-1])))
        assert cosine > 0.9999, (row[:-1], cosine)
    assert indices == clean_indices and any("search_text" in name for name in indices)


def test_a_model_switch_under_queries_fails_none_and_mixes_none(
    corpus: LocalStore, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    """A server follows the index: while another process ingests with a new model (vectors of another
    width, so a mixed query could not even be answered), a client querying throughout sees no error,
    and once the new generation answers, only it does."""
    import threading

    from mediasearch.models.random_init import build_random_clip
    from tests.freshness import poll, server

    other = build_random_clip(tmp_path / "model-b", seed=7, projection_dim=24)
    base = _env(MEDIASEARCH_LANCEDB_URI=str(tmp_path / "lancedb"), MEDIASEARCH_INDEX_REFRESH_S="0.2")
    first = subprocess.run(
        [sys.executable, "-m", "mediasearch.cli", "ingest", str(corpus.root)],
        env={**base, "MEDIASEARCH_CLIP_MODEL": str(tiny_clip_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr
    # No MEDIASEARCH_CLIP_MODEL: the server encodes with whatever model the serving generation has.
    with server(free_port(), base, tmp_path / "server.log") as http:
        answers: list[tuple[float, int, str | None]] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    r = http.post(
                        "/search", json={"text": "a red square", "kinds": ["image"], "k": 3}, timeout=60
                    )
                    answers.append((sent, r.status_code, r.json().get("generation")))
                except Exception as exc:  # a failed query is what this test counts
                    answers.append((sent, -1, f"{type(exc).__name__}: {exc}"))

        thread = threading.Thread(target=client)
        thread.start()
        try:
            time.sleep(1.0)
            switch = subprocess.run(
                [sys.executable, "-m", "mediasearch.cli", "ingest", str(corpus.root)],
                env={**base, "MEDIASEARCH_CLIP_MODEL": str(other)},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert switch.returncode == 0, switch.stderr
            committed = time.monotonic()
            catalog = json.loads((tmp_path / "lancedb" / "_generations" / "media.json").read_text())
            new = catalog["serving"]
            poll(lambda: any(g == new for _, _, g in answers[-3:]), timeout_s=60, interval_s=0.1)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=60)
    statuses = [s for _, s, _ in answers]
    assert len(answers) > 20 and set(statuses) == {200}, [a for a in answers if a[1] != 200][:5]
    generations = [g for _, _, g in answers]
    old = generations[0]
    assert old != new and set(generations) == {old, new}
    first_new = generations.index(new)
    assert all(g == new for g in generations[first_new:])  # once switched, never an answer from the old
    switched_at = answers[first_new][0]
    assert switched_at - committed < 30
