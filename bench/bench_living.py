"""The living index between processes: racing ingests, and a model switch under queries.

    HF_HUB_OFFLINE=1 python bench/bench_living.py [--runs 20] [--images 360]

1. Racing writers: two processes write the same 400 new ids into one collection at the same instant,
   `--runs` times (the issue's case: 800 rows for 400 ids in 8 runs of 8). Figure: duplicate rows.
2. Model switch: the sample corpus (`mediasearch demo-data`'s labelled images) is ingested with a tiny
   random CLIP; a real `mediasearch serve` process follows the index while one client queries it
   throughout; then another process ingests with a second model (another vector width). Figures:
   queries answered, errors, the time the rebuild took, and the time from its commit to the first
   answer from the new generation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import emit, environment, log

from tests.conftest import free_port
from tests.test_living_index import RUNS, UPSERT, _rows_and_ids


def racing(work: Path, runs: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", UPSERT, str(work), me, str(runs)], env=env)
        for me in ("1", "2")
    ]
    for p in procs:
        if p.wait(timeout=600) != 0:
            raise SystemExit("a racing writer failed")
    duplicates = []
    for run in range(runs):
        uri = str(work / f"run{run}")
        serving = json.loads((Path(uri) / "_generations" / "media.json").read_text())["serving"]
        rows, ids = _rows_and_ids(uri, serving)
        duplicates.append(rows - ids)
    return {
        "runs": runs,
        "ids_per_run": 400,
        "duplicate_rows_total": sum(duplicates),
        "runs_with_duplicates": sum(1 for d in duplicates if d),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def switch(work: Path, images: int) -> dict[str, object]:
    from mediasearch.core.storage import LocalStore
    from mediasearch.corpus.images import generate_images
    from mediasearch.models.random_init import build_random_clip

    store = LocalStore(work / "media")
    generate_images(store, "demo/images", limit=images)
    model_a = build_random_clip(work / "model-a", seed=0)
    model_b = build_random_clip(work / "model-b", seed=7, projection_dim=24)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEDIASEARCH_LANCEDB_URI": str(work / "lancedb"),
        "MEDIASEARCH_INDEX_REFRESH_S": "1.0",
    }
    cli = [sys.executable, "-m", "mediasearch.cli"]
    t0 = time.perf_counter()
    subprocess.run(
        [*cli, "ingest", str(store.root)], env={**env, "MEDIASEARCH_CLIP_MODEL": str(model_a)}, check=True
    )
    first_ingest_s = time.perf_counter() - t0
    port = free_port()
    with (work / "server.log").open("w") as server_log:
        server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stderr=server_log)
        url = f"http://127.0.0.1:{port}"
        answers: list[tuple[float, int, str | None]] = []
        stop = threading.Event()
        try:
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)

            def client() -> None:
                with httpx.Client(timeout=60) as http:
                    while not stop.is_set():
                        sent = time.time()  # wall clock: compared with the catalog's switch time
                        try:
                            r = http.post(
                                f"{url}/search", json={"text": "a red circle", "kinds": ["image"], "k": 10}
                            )
                            answers.append((sent, r.status_code, r.json().get("generation")))
                        except Exception as exc:
                            answers.append((sent, -1, str(exc)))

            thread = threading.Thread(target=client)
            thread.start()
            time.sleep(2)
            t1 = time.perf_counter()
            subprocess.run(
                [*cli, "ingest", str(store.root)],
                env={**env, "MEDIASEARCH_CLIP_MODEL": str(model_b)},
                check=True,
            )
            rebuild_s = time.perf_counter() - t1
            catalog = json.loads((work / "lancedb" / "_generations" / "media.json").read_text())
            new = catalog["serving"]
            switched = next(g for g in catalog["generations"] if g["name"] == new)["switched_at"]
            committed = datetime.fromisoformat(switched).timestamp()
            deadline = time.time() + 120
            while not any(g == new for _, _, g in answers[-3:]) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(2)
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=30)
    thread.join(timeout=60)
    generations = [g for _, _, g in answers]
    first_new = generations.index(new) if new in generations else None
    after = generations[first_new:] if first_new is not None else []
    return {
        "images": images,
        "first_ingest_s": round(first_ingest_s, 2),
        "rebuild_with_new_model_s": round(rebuild_s, 2),
        "queries_answered": sum(1 for _, s, _ in answers if s == 200),
        "errors": sum(1 for _, s, _ in answers if s != 200),
        "answers_from_old_after_switch": sum(1 for g in after if g != new),
        "switch_to_first_new_answer_s": round(answers[first_new][0] - committed, 3)
        if first_new is not None
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--images", type=int, default=360)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-living-") as tmp:
        work = Path(tmp)
        (work / "race").mkdir()
        log("racing writers")
        race = racing(work / "race", args.runs)
        log("model switch under queries")
        swap = switch(work / "switch", args.images)
    emit("bench_living", {"racing_writers": race, "model_switch": swap, "environment": environment()})


if __name__ == "__main__":
    main()
