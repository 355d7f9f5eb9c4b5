"""Peak memory of the API for query images built to cost the most to decode.

A few bytes of PNG can describe a huge image (issue 11 measured a 4 KB 6000 x 6000 1-bit PNG at
370 MB, and 8 of them at once took a server from 0.76 to 5 GB). This sends such images to
`POST /search` over real HTTP, against a server in its own process (the real `create_app`, a LanceDB
index of a few images, a random CLIP with ViT-B/32 shapes, so the image preprocessing is the real
model's), and reads the server's peak resident memory (VmHWM) from /proc:

- one request per case, each against a fresh server (so nothing an earlier case freed hides the
  next one's cost): peak minus the idle RSS measured after a warm-up query;
- 8 concurrent requests of the costliest accepted case, against a fresh server.

Targets: no accepted image raises the peak by more than 100 MB; 8 concurrent worst-case requests stay
under 1 GB above idle. Linux only (/proc).

    python bench/bench_decode_memory.py           # ViT-B/32 shapes
    python bench/bench_decode_memory.py --tiny    # a tiny model, to check that it runs
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _common import emit, environment, free_port, loadavg, log
from PIL import Image

PER_IMAGE_TARGET_MB = 100
CONCURRENT_TARGET_MB = 1024
CONCURRENT = 8


def encode(mode: str, size: tuple[int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image = Image.new(mode, size, 255 if mode in ("1", "L", "P") else None)
    if fmt == "JPEG":
        # Noise-free but not uniform, so the JPEG is a realistic size.
        image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.save(buf, fmt, quality=90) if fmt == "JPEG" else image.save(buf, fmt)
    return buf.getvalue()


# name -> (mode, size, format). The first ones are issue 11's; the others sit at each limit: the
# pixel limit (40 MP), the aspect ratio limit (20:1), the decode memory limit (72 MiB).
CASES: dict[str, tuple[str, tuple[int, int], str]] = {
    "1-bit PNG 6000x6000 (issue 11)": ("1", (6000, 6000), "PNG"),
    "1-bit PNG 1x40000 (issue 11)": ("1", (1, 40000), "PNG"),
    "greyscale PNG 1x4000 (issue 11)": ("L", (1, 4000), "PNG"),
    "1-bit PNG 40000000x1 (issue 10)": ("1", (40_000_000, 1), "PNG"),
    "palette PNG 6300x6300 (40 MP)": ("P", (6300, 6300), "PNG"),
    "greyscale PNG 28000x1400 (20:1, 39 MP)": ("L", (28000, 1400), "PNG"),
    "RGB PNG 4096x4096 (at the decode limit)": ("RGB", (4096, 4096), "PNG"),
    "RGBA PNG 4096x4096 (at the decode limit)": ("RGBA", (4096, 4096), "PNG"),
    "RGB PNG 4500x4500 (over the decode limit)": ("RGB", (4500, 4500), "PNG"),
    "JPEG 7300x5475 (40 MP)": ("RGB", (7300, 5475), "JPEG"),
    "16-bit PNG 6000x6000": ("I;16", (6000, 6000), "PNG"),
}


def proc_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    # Linux resets VmHWM to the current RSS on "5"; the fresh server per case makes this a belt to
    # those braces.
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# -- the server, in its own process ----------------------------------------------------------------


def serve(workdir: Path, port: int) -> None:
    import uvicorn

    from mediasearch.core.settings import Settings
    from mediasearch.core.storage import LocalStore
    from mediasearch.index.lancedb import LanceDBIndex
    from mediasearch.models.clip import ClipModel
    from mediasearch.query.api import create_app
    from mediasearch.query.encoder import LocalEncoder
    from mediasearch.query.links import MediaLinks
    from mediasearch.query.search import SearchService

    store = LocalStore(workdir / "media")
    model = ClipModel(str(workdir / "model"), device="cpu")
    service = SearchService(
        LanceDBIndex(str(workdir / "lancedb"), "media"), LocalEncoder(model), store, MediaLinks()
    )
    app = create_app(Settings(store=str(store.root), log_level="WARNING"), service=service)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Server:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(workdir), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("server did not start")
        # A warm-up query through the image path: the model's first forward and the processor's
        # first call allocate what every later request reuses.
        status, _ = self.search(encode("RGB", (64, 48)))
        assert status == 200, status
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def search(self, data: bytes) -> tuple[int, str]:
        body = {"image": base64.b64encode(data).decode(), "k": 3, "kinds": ["image"]}
        response = httpx.post(f"{self.url}/search", json=body, timeout=300)
        error = response.json().get("error", "") if response.status_code != 200 else ""
        detail = response.json().get("detail") if response.status_code != 200 else None
        return response.status_code, f"{error}: {detail}" if detail else error


# -- the measurements --------------------------------------------------------------------------------


def prepare(workdir: Path, tiny: bool) -> None:
    from mediasearch.core.storage import LocalStore
    from mediasearch.index.lancedb import LanceDBIndex
    from mediasearch.indexing.handler import ClipHandler
    from mediasearch.indexing.pipeline import ingest
    from mediasearch.models.clip import ClipModel
    from mediasearch.models.random_init import build_random_clip

    log(f"building a random CLIP ({'tiny' if tiny else 'ViT-B/32 shapes'})")
    build_random_clip(workdir / "model", size="tiny" if tiny else "base")
    store = LocalStore(workdir / "media")
    for n, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30)]):
        store.put(f"photos/{n}.png", encode("RGB", (64, 48)) if n == 0 else _solid(colour))
    index = LanceDBIndex(str(workdir / "lancedb"), "media")
    ingest(store, index, ClipHandler(ClipModel(str(workdir / "model"), device="cpu")), progress=False)


def _solid(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "PNG")
    return buf.getvalue()


def measure_one(workdir: Path, name: str, data: bytes) -> dict[str, object]:
    with Server(workdir) as server:
        pid = server.proc.pid
        idle = proc_mb(pid, "VmRSS")
        reset_peak(pid)
        started = time.perf_counter()
        status, error = server.search(data)
        seconds = time.perf_counter() - started
        peak = proc_mb(pid, "VmHWM")
    row = {
        "case": name,
        "bytes": len(data),
        "status": status,
        "accepted": status == 200,
        "peak_increase_mb": round(peak - idle, 1),
        "seconds": round(seconds, 3),
        "idle_rss_mb": round(idle, 1),
    }
    if error:
        row["error"] = error
    log(f"{name}: {status} +{row['peak_increase_mb']} MB in {row['seconds']} s {error[:90]}")
    return row


def measure_concurrent(workdir: Path, name: str, data: bytes) -> dict[str, object]:
    with Server(workdir) as server:
        pid = server.proc.pid
        idle = proc_mb(pid, "VmRSS")
        reset_peak(pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            statuses = [s for s, _ in pool.map(lambda _: server.search(data), range(CONCURRENT))]
        seconds = time.perf_counter() - started
        peak = proc_mb(pid, "VmHWM")
    row = {
        "case": name,
        "requests": CONCURRENT,
        "statuses": statuses,
        "peak_increase_mb": round(peak - idle, 1),
        "seconds": round(seconds, 3),
        "idle_rss_mb": round(idle, 1),
    }
    log(f"{CONCURRENT} x {name}: {statuses} +{row['peak_increase_mb']} MB in {row['seconds']} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny random CLIP instead of ViT-B/32 shapes")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return

    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        workdir = Path(tmp)
        prepare(workdir, args.tiny)
        images = {name: encode(*spec) for name, spec in CASES.items()}
        rows = [measure_one(workdir, name, data) for name, data in images.items()]
        accepted = [r for r in rows if r["accepted"]]
        worst = max(accepted, key=lambda r: float(r["peak_increase_mb"]))  # type: ignore[arg-type]
        concurrent = measure_concurrent(workdir, str(worst["case"]), images[str(worst["case"])])

    worst_mb = float(worst["peak_increase_mb"])  # type: ignore[arg-type]
    concurrent_mb = float(concurrent["peak_increase_mb"])  # type: ignore[arg-type]
    result = {
        "bench": "decode_memory",
        "model": "tiny random CLIP" if args.tiny else "random CLIP, ViT-B/32 shapes",
        "targets": {
            "per_accepted_image_mb": PER_IMAGE_TARGET_MB,
            "concurrent_mb": CONCURRENT_TARGET_MB,
        },
        "worst_accepted_case": worst["case"],
        "worst_accepted_increase_mb": worst_mb,
        "concurrent_increase_mb": concurrent_mb,
        "met": worst_mb <= PER_IMAGE_TARGET_MB and concurrent_mb < CONCURRENT_TARGET_MB,
        "cases": rows,
        "concurrent": concurrent,
        "loadavg": loadavg(),
        "environment": environment(),
    }
    emit("bench_decode_memory", result)
    if not result["met"]:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
