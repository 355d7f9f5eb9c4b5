"""CLI start-up, each run a fresh process: `mediasearch --help`, a command that loads no model
(`generations list`), and `mediasearch search "x"` with the model load included, on the ONNX engine
(the CPU default: fp32 text tower) and on PyTorch (the reference), side by side in one run.

The model is `mediasearch random-model --size base` (ViT-B/32 shapes, random weights); the index holds
36 sample images, ingested once before timing (which also makes the ONNX export). Measured per command:
wall seconds (min and median over the runs) and CPU seconds of the process. For `search`, a second
set of runs times its phases inside one process: importing the CLI, building the search service
(backends, index), loading the model (`warm_up`: the text tower) and the query; the rest is the
interpreter's start and exit.
`python -X importtime` lists the top-level imports over 30 ms of `--help` and of `search`. Last, the
query Lambda's init with the encoder in the function (ONNX Runtime on the export, the image's package
set): its phases, warm query latency, peak memory, and the export's file sizes.

    python bench/bench_cli.py            # 10 runs each
    python bench/bench_cli.py --runs 3   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, environment, loadavg, log

from mediasearch.encoders.onnx_cache import is_export_dir

HELP_TARGET_S = 0.5
SEARCH_TARGET_S = 3.0
CLI = Path(sys.executable).with_name("mediasearch")

PHASES = """
import json, time
t0 = time.perf_counter()
from mediasearch.cli import _service, _settings
t1 = time.perf_counter()
from mediasearch.core.records import SearchRequest
settings = _settings()
service = _service(settings)
t2 = time.perf_counter()
service.warm_up()
t3 = time.perf_counter()
response = service.search(SearchRequest(text="x", k=10))
t4 = time.perf_counter()
encoder = service.encoder.view.current().encoder
engine = type(getattr(encoder, "model", encoder)).__name__
print(json.dumps({"import_cli_s": t1 - t0, "build_service_s": t2 - t1, "load_model_s": t3 - t2,
                  "query_s": t4 - t3, "results": len(response.results), "model_class": engine}))
"""


# The query Lambda's init with the encoder in the function, phase by phase, with what its image leaves
# out unimportable (tests/test_query_lambda.py's list): the app as with the SageMaker encoder, then
# ONNX Runtime and tokenizers, then the text tower of the export and a first query, then warm queries.
LAMBDA_INIT = """
import importlib.abc, json, resource, sys, time
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "lancedb", "pyarrow", "av", "scenedetect", "cv2",
                                  "typer", "uvicorn"}:
            raise ModuleNotFoundError(name, name=name)
sys.meta_path.insert(0, Block())
t0 = time.perf_counter()
import query_lambda.handler
t1 = time.perf_counter()
import onnxruntime, tokenizers
t2 = time.perf_counter()
from mediasearch.encoders.onnx_clip import OnnxClipModel
model = OnnxClipModel(sys.argv[1])
model.embed_texts(["a first query"])
t3 = time.perf_counter()
warm = []
for i in range(20):
    started = time.perf_counter()
    model.embed_texts([f"a photo of thing number {i}"])
    warm.append(time.perf_counter() - started)
warm.sort()
print(json.dumps({"import_app_s": t1 - t0, "import_onnxruntime_tokenizers_s": t2 - t1,
                  "load_text_tower_and_first_query_s": t3 - t2, "warm_query_ms_p50": 1000 * warm[10],
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def lambda_init(export: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    lambda_env = {
        **env,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MEDIASEARCH_INDEX_BACKEND": "opensearch",
        "MEDIASEARCH_OPENSEARCH_URL": "http://127.0.0.1:9",
        "MEDIASEARCH_ENCODER_BACKEND": "sagemaker",  # the app without a warm-up: its import alone
        "MEDIASEARCH_SAGEMAKER_ENDPOINT": "x",
    }
    rows = [
        json.loads(timed([sys.executable, "-c", LAMBDA_INIT, str(export)], lambda_env)[2].splitlines()[-1])
        for _ in range(runs)
    ]
    out = {f"{k}_median": round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}
    out["init_s_median"] = round(
        out["import_app_s_median"]
        + out["import_onnxruntime_tokenizers_s_median"]
        + out["load_text_tower_and_first_query_s_median"],
        3,
    )
    sizes = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(export.glob("*.onnx"))}
    out["export_file_mib"] = sizes
    return out


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def series(cmd: list[str], env: dict[str, str], runs: int) -> dict[str, Any]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, _ = timed(cmd, env)
        walls.append(wall)
        cpus.append(cpu)
    return {
        "wall_s_min": round(min(walls), 3),
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_each": [round(w, 3) for w in walls],
        "cpu_s_median": round(statistics.median(cpus), 3),
        "runs": runs,
    }


def phases(env: dict[str, str], runs: int) -> dict[str, Any]:
    rows = []
    for _ in range(runs):
        started = time.perf_counter()
        _, _, stdout = timed([sys.executable, "-c", PHASES], env)
        row = json.loads(stdout.strip().splitlines()[-1])
        # The rest of the process's wall time: interpreter start, and exit (torch's teardown is slow).
        row["start_and_exit_s"] = (
            time.perf_counter()
            - started
            - sum(row[k] for k in ("import_cli_s", "build_service_s", "load_model_s", "query_s"))
        )
        rows.append(row)
    keys = ["start_and_exit_s", "import_cli_s", "build_service_s", "load_model_s", "query_s"]
    out: dict[str, Any] = {f"{k}_median": round(statistics.median(r[k] for r in rows), 3) for k in keys}
    out["model_class"] = rows[0]["model_class"]
    out["results"] = rows[0]["results"]
    return out


def slow_imports(cmd: list[str], env: dict[str, str], over_ms: float = 30.0) -> list[dict[str, Any]]:
    """Top-level imports (cumulative) over `over_ms`, from one `python -X importtime` run."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True, check=False
    )
    found = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, raw = line.removeprefix("import time:").split("|")
        name = raw.removeprefix(" ")
        depth = (len(name) - len(name.lstrip())) // 2  # two spaces per level of nesting
        if depth == 0 and int(cumulative) / 1000 >= over_ms:
            found.append({"module": name.strip(), "cumulative_ms": round(int(cumulative) / 1000, 1)})
    return sorted(found, key=lambda x: -x["cumulative_ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--images", type=int, default=36)
    args = parser.parse_args()
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "MEDIASEARCH_STORE": str(work / "store"),
            "MEDIASEARCH_LANCEDB_URI": str(work / "lancedb"),
            "MEDIASEARCH_CACHE_DIR": str(work / "cache"),
            "MEDIASEARCH_CLIP_MODEL": str(work / "random-clip"),
        }
        for name in [
            k
            for k in env
            if k.startswith("MEDIASEARCH_")
            and k
            not in {
                "MEDIASEARCH_STORE",
                "MEDIASEARCH_LANCEDB_URI",
                "MEDIASEARCH_CACHE_DIR",
                "MEDIASEARCH_CLIP_MODEL",
            }
        ]:
            del env[name]  # the defaults are what is measured (engine auto: ONNX Runtime on this CPU)
        log("building the base random model, the sample corpus and the index (ONNX export included)")
        timed([str(CLI), "random-model", str(work / "random-clip"), "--size", "base"], env)
        timed([str(CLI), "demo-data", "--limit", str(args.images), "--no-videos"], env)
        started = time.perf_counter()
        timed([str(CLI), "ingest", str(work / "store" / "demo")], env)
        ingest_s = time.perf_counter() - started
        torch_env = {**env, "MEDIASEARCH_CLIP_ENGINE": "torch"}

        log(f"--help x{args.runs}")
        help_ = series([str(CLI), "--help"], env, args.runs)
        log(f"generations list x{args.runs}")
        no_model = series([str(CLI), "generations", "list"], env, args.runs)
        python = series([sys.executable, "-c", "pass"], env, args.runs)
        search_cmd = [str(CLI), "search", "x"]
        onnx: dict[str, Any] = {}
        torch_: dict[str, Any] = {}
        for label, target, e in (("onnx", onnx, env), ("torch", torch_, torch_env)):
            log(f"search (engine {label}) x{args.runs}")
            target.update(series(search_cmd, e, args.runs))
            target["phases"] = phases(e, max(3, args.runs // 2))
        log("query Lambda init (encoder in the function)")
        (export,) = [p for p in (work / "cache" / "onnx").iterdir() if is_export_dir(p)]
        lambda_ = lambda_init(export, env, max(3, args.runs // 2))
        result = {
            "bench": "cli",
            "model": "random-init CLIP, base shapes (ViT-B/32), ONNX fp32 text tower (engine auto on CPU)",
            "corpus_images": args.images,
            "ingest_s_with_export": round(ingest_s, 1),
            "python_startup": python,
            "help": {
                **help_,
                "target_s": HELP_TARGET_S,
                "meets_target": help_["wall_s_median"] <= HELP_TARGET_S,
            },
            "generations_list": no_model,
            "search_onnx": {
                **onnx,
                "target_s": SEARCH_TARGET_S,
                "meets_target": onnx["wall_s_median"] <= SEARCH_TARGET_S,
            },
            "search_torch_reference": torch_,
            "search_onnx_vs_torch_wall": round(onnx["wall_s_median"] / torch_["wall_s_median"], 3),
            "query_lambda_init_onnx": lambda_,
            "slow_imports_help": slow_imports(["-m", "mediasearch.cli", "--help"], env),
            "slow_imports_search": slow_imports(["-m", "mediasearch.cli", "search", "x"], env),
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            **environment(),
        }
        emit("bench_cli", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
