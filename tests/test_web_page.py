"""The search page in a real browser: Playwright drives Debian's Chromium against a live server.

The server is uvicorn on a free localhost port, over a small generated corpus (24 images, three
videos and a near-duplicate of one) embedded with the tiny random CLIP. The test types a query, picks
and drops images, plays a scene, asks for "more like this", checks the error and empty-result
messages, and saves `test-artifacts/search-page.png`.

Skipped (with the reason) when Playwright or /usr/bin/chromium is missing; `.ci/run` installs both.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from mediasearch.core.errors import ModelLoadError
from mediasearch.core.records import stable_id
from mediasearch.core.settings import Settings
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_images
from mediasearch.corpus.videos import default_specs, write_corpus
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.query.api import create_app
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.conftest import free_port

try:
    from playwright.sync_api import BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says why
    sync_playwright = None

CHROMIUM = os.environ.get("MEDIASEARCH_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Headless and offline: no GPU, no sandbox (CI runs as root), and none of Chromium's own traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

pytestmark = [
    pytest.mark.skipif(
        sync_playwright is None, reason="playwright is not installed (pip install playwright)"
    ),
    pytest.mark.skipif(
        not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
        reason=f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it",
    ),
]

VIDEOS = ("cuts_a.mp4", "cuts_b.mp4", "anim.gif")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, clip_model) -> tuple[LocalStore, SearchService]:
    root = tmp_path_factory.mktemp("web")
    store = LocalStore(root / "media")
    generate_images(store, "demo/images", limit=24)
    specs = [s for s in default_specs("demo/videos") if s.key.rsplit("/", 1)[-1] in VIDEOS]
    dup = [("demo/videos/cuts_a.mp4", "demo/videos/dups/cuts_a_small.mp4", 0.6, 32)]
    write_corpus(store, "demo/videos", specs=specs, duplicates=dup)
    index = LanceDBIndex(str(root / "lancedb"), "media")
    options = VideoOptions(max_scene_s=3.0, frames_per_scene=2)
    report = ingest(store, index, ClipHandler(clip_model), video_options=options, progress=False)
    assert not report.failures, report.failures
    service = SearchService(
        index, LocalEncoder(clip_model), store, MediaLinks(), text_embedder=OfflineTextEmbedder()
    )
    return store, service


class OfflineTextEmbedder:
    """Caption mode on a server without network: its text model was never downloaded."""

    dim = 384

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise ModelLoadError(
            "cannot load text embedder 'sentence-transformers/all-MiniLM-L6-v2': We couldn't connect to "
            "'https://huggingface.co' to load the files, and couldn't find them in the cached files."
        )


class BackgroundServer:
    """uvicorn in a daemon thread of the test process, on a free loopback port."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-web-test", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(corpus) -> Iterator[str]:
    store, service = corpus
    with BackgroundServer(create_app(Settings(store=str(store.root)), service=service)) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh profile: no state from other runs
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser_context: BrowserContext, base_url: str) -> Iterator[Page]:
    page = browser_context.new_page()
    problems: list[str] = []
    # A 4xx the page reports to the user is expected; a script error or a CSP violation is not.
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.goto(base_url + "/")
    expect(page.locator("#index-info")).to_contain_text("documents indexed")
    yield page
    page.close()
    assert not problems, problems


SCORE = re.compile(r"^-?\d\.\d{3}$")
# Thumbnails load lazily, so only those on screen are expected; a broken one has naturalWidth 0.
IMAGES_ON_SCREEN_LOADED = (
    "[...document.querySelectorAll('#results img')]"
    ".filter(i => i.getBoundingClientRect().top < window.innerHeight)"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


def wait_until(page: Page, expression: str, timeout_s: float = 10.0) -> None:
    """Poll a JS expression until it is truthy.

    Not `page.wait_for_function`: that evaluates a string inside the page, which the page's CSP
    (no 'unsafe-eval') rightly refuses; `page.evaluate` goes through the DevTools protocol instead.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s} s: {expression}")
        time.sleep(0.05)


def search_for(page: Page, text: str) -> None:
    page.fill("#query", text)
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text(f"for “{text}”")


def test_text_search_shows_a_grid_with_scores_and_scenes(page: Page) -> None:
    search_for(page, "a red circle")
    cards = page.locator("#results .card")
    expect(cards.first).to_be_visible()
    assert cards.count() >= 10
    scores = [float(s) for s in page.locator("#results .card .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert all(SCORE.match(s) for s in page.locator("#results .card .score").all_inner_texts())
    assert page.locator("#results .card.image").count() > 0
    wait_until(page, IMAGES_ON_SCREEN_LOADED)

    # Videos only: each shows its matching scenes with timestamps.
    page.uncheck("input[name=kinds][value=image]")
    expect(page.locator("#results .card.image")).to_have_count(0)
    videos = page.locator("#results .card.video")
    expect(videos.first).to_be_visible()
    first_ts = videos.first.locator(".scene .ts").first.inner_text()
    assert re.fullmatch(r"\d+:\d\d\.\d\u2013\d+:\d\d\.\d", first_ts), first_ts

    page.check("input[name=kinds][value=image]")
    expect(page.locator("#results .card.image").first).to_be_visible()
    # Scroll through the page so every lazy thumbnail loads before the full-page screenshot.
    height = page.evaluate("document.body.scrollHeight")
    for y in range(0, height + 900, 600):
        page.evaluate(f"window.scrollTo(0, {y})")
        wait_until(
            page, IMAGES_ON_SCREEN_LOADED.replace("top < window.innerHeight", "bottom < window.innerHeight")
        )
    page.evaluate("window.scrollTo(0, 0)")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)


def test_a_scene_plays_the_video_from_its_start(page: Page) -> None:
    page.uncheck("input[name=kinds][value=image]")
    search_for(page, "a blue square")
    mp4 = page.locator("#results .card.video").filter(has_text=".mp4").first
    scene = mp4.locator(".scene").last
    t_start = float(scene.get_attribute("data-t") or "nan")
    scene.click()
    expect(page.locator("#player")).to_have_attribute("open", "")
    video = page.locator("#player-video")
    assert f"#t={t_start:.2f}" in (video.get_attribute("src") or "")
    # The server serves the bytes with Range support, so the browser can seek straight to the scene.
    wait_until(page, "document.querySelector('#player-video').readyState >= 1")
    current = page.evaluate("document.querySelector('#player-video').currentTime")
    assert current == pytest.approx(t_start, abs=0.6)
    page.click("#player-close")
    expect(page.locator("#player")).not_to_have_attribute("open", "")


def test_more_like_this_lists_other_videos(page: Page, corpus) -> None:
    store, _ = corpus
    page.uncheck("input[name=kinds][value=image]")
    search_for(page, "a green triangle")
    source = page.locator("#results .card.video").filter(has_text="cuts_a.mp4").first
    source_id = source.get_attribute("data-id")
    assert source_id == stable_id(store.uri("demo/videos/cuts_a.mp4"))
    source.locator(".more-like-this").click()
    expect(page.locator("#status")).to_contain_text("videos like cuts_a.mp4")
    # The status can change before the grid is replaced: wait for the source card to go, then read
    # every card in one snapshot rather than element by element while the grid may still change.
    expect(page.locator(f'#results .card[data-id="{source_id}"]')).to_have_count(0)
    expect(page.locator("#results .card").first).to_be_visible()
    rows = page.eval_on_selector_all("#results .card", "els => els.map(e => [e.dataset.kind, e.dataset.id])")
    kinds = {kind for kind, _ in rows}
    ids = [card_id for _, card_id in rows]
    assert kinds == {"video"} and source_id not in ids
    # Its re-encoded near-duplicate is the most similar video.
    assert ids[0] == stable_id(store.uri("demo/videos/dups/cuts_a_small.mp4"))


def test_pick_and_drop_an_image(page: Page, corpus, tmp_path: Path) -> None:
    store, _ = corpus
    key = next(o.key for o in store.list("demo/images") if o.key.endswith(".png"))
    picked = tmp_path / key.rsplit("/", 1)[-1]
    picked.write_bytes(store.get(key))

    page.set_input_files("#image-input", str(picked))
    expect(page.locator("#status")).to_contain_text(f"images like {picked.name}")
    expect(page.locator("#image-chip")).to_be_visible()
    first = page.locator("#results .card").first
    assert first.get_attribute("data-id") == stable_id(store.uri(key))
    assert first.locator(".score").inner_text() == "1.000"

    # The same, dropped onto the page.
    other = next(o.key for o in store.list("demo/images") if o.key.endswith(".jpg"))
    page.evaluate(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
            document.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
        [base64.b64encode(store.get(other)).decode(), "dropped.jpg"],
    )
    expect(page.locator("#status")).to_contain_text("images like dropped.jpg")
    expect(page.locator("#results .card").first).to_have_attribute("data-id", stable_id(store.uri(other)))

    # Typing goes back to a text search.
    page.fill("#query", "a yellow star")
    expect(page.locator("#image-chip")).to_be_hidden()


def test_errors_and_empty_results_are_explained(page: Page, tmp_path: Path) -> None:
    # Nothing to search for: said on the page, no request made.
    page.click("#search-button")
    expect(page.locator("#error")).to_contain_text("Type something to search for")

    # A file that is not an image: the server's 400 and the field it names are shown.
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"these are notes, not pixels")
    page.set_input_files("#image-input", str(fake))
    error = page.locator("#error")
    expect(error).to_contain_text("not a recognised image format")
    expect(error).to_contain_text("field: image")
    expect(page.locator("#results .card")).to_have_count(0)

    # No kinds chosen.
    page.click("#image-clear")
    page.fill("#query", "a red circle")
    page.uncheck("input[name=kinds][value=image]")
    page.uncheck("input[name=kinds][value=video]")
    page.click("#search-button")
    expect(error).to_contain_text("Choose images, videos or both")

    # An empty answer (the demo index always has neighbours, so the route is played here).
    page.check("input[name=kinds][value=image]")
    page.route(
        "**/search",
        lambda route: route.fulfill(json={"results": [], "facets": {}, "took_ms": 1.0}),
    )
    page.click("#search-button")
    expect(page.locator("#results .empty")).to_contain_text("No results for “a red circle”")
    expect(error).to_be_hidden()
    page.unroute("**/search")

    # The server down: a plain sentence, not a stack of fetch errors.
    page.route("**/search", lambda route: route.abort())
    page.click("#search-button")
    expect(error).to_contain_text("Cannot reach the server")


# ---- issue 11, item 13 -------------------------------------------------------------------------------


def test_more_like_this_scrolls_to_its_results(page: Page) -> None:
    # A low window, so that the new (shorter) grid still leaves the page scrolled past the answer
    # unless the page scrolls to it.
    page.set_viewport_size({"width": 1280, "height": 500})
    search_for(page, "a green triangle")
    more = page.locator("#results .card.video .more-like-this").last
    more.scroll_into_view_if_needed()
    assert page.evaluate("window.scrollY") > 300  # the button is well down the page
    more.click()
    expect(page.locator("#status")).to_contain_text("videos like")
    # The answer is brought into view: the status line above the grid near the top of the window (as
    # near as the page's height lets it), and the first new card on screen.
    wait_until(
        page,
        "(() => { const s = document.querySelector('#status').getBoundingClientRect().top;"
        " const c = document.querySelector('#results .card').getBoundingClientRect().top;"
        " return s >= -1 && s < window.innerHeight / 3 && c < window.innerHeight; })()",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "more-like-this.png"))
    page.set_viewport_size({"width": 1280, "height": 900})


def test_video_cards_show_their_scene_strip(page: Page) -> None:
    page.uncheck("input[name=kinds][value=image]")
    search_for(page, "a blue square")
    videos = page.locator("#results .card.video")
    expect(videos.first).to_be_visible()
    strips = page.locator("#results .card.video img.strip")
    expect(strips).to_have_count(videos.count())
    assert "/strip" in (strips.first.get_attribute("src") or "")
    wait_until(
        page,
        "[...document.querySelectorAll('#results img.strip')].slice(0, 2).every(i => i.complete && i.naturalWidth > 0)",
    )


def test_a_video_only_grid_uses_the_whole_width(page: Page) -> None:
    page.uncheck("input[name=kinds][value=image]")
    search_for(page, "a red circle")
    expect(page.locator("#results .card.video").first).to_be_visible()
    expect(page.locator("#results.videos-only")).to_have_count(1)
    boxes = page.eval_on_selector_all(
        "#results .card",
        "els => els.map(e => { const b = e.getBoundingClientRect(); return [b.top, b.right]; })",
    )
    grid_right = page.evaluate("document.querySelector('#results').getBoundingClientRect().right")
    first_row = [right for top, right in boxes if abs(top - boxes[0][0]) < 2]
    assert len(first_row) >= 2 and max(first_row) == pytest.approx(grid_right, abs=2)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "videos-only.png"), full_page=True)

    # With images again, video cards are twice an image card's width.
    page.check("input[name=kinds][value=image]")
    expect(page.locator("#results.videos-only")).to_have_count(0)


def test_caption_mode_offline_says_what_to_do(page: Page) -> None:
    page.check("input[name=mode][value=caption]")
    search_for_error = page.locator("#error")
    page.fill("#query", "a dog on a beach")
    page.press("#query", "Enter")
    expect(search_for_error).to_contain_text("caption search is unavailable")
    expect(search_for_error).to_contain_text("the clip and hybrid modes work")
    expect(search_for_error).to_contain_text("Switch the mode to clip or hybrid")
    assert "huggingface.co" not in search_for_error.inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "caption-offline.png"))
    page.check("input[name=mode][value=clip]")
    expect(page.locator("#results .card").first).to_be_visible()
    expect(search_for_error).to_be_hidden()


def test_the_page_has_a_favicon(page: Page, base_url: str) -> None:
    href = page.get_attribute("link[rel=icon]", "href")
    for url in (base_url + (href or ""), base_url + "/favicon.ico"):
        response = page.request.get(url)
        assert response.status == 200 and response.headers["content-type"].startswith("image/svg+xml"), url
        assert response.body().startswith(b"<svg")


def test_composed_query_parts_with_weights_and_contributions(page: Page, tmp_path: Path) -> None:
    from tests.conftest import image_bytes

    picture = tmp_path / "red.png"
    picture.write_bytes(image_bytes((220, 20, 30)))
    page.fill("#query", "a red circle")
    page.click("#add-minus")
    page.fill("#part-rows .part-row:nth-child(1) .part-text", "people")
    page.click("#add-plus")
    second = page.locator("#part-rows .part-row:nth-child(2)")
    second.locator(".part-kind").select_option("image")
    second.locator(".part-file").set_input_files(str(picture))
    wait_until(page, "!!document.querySelector('#part-rows .part-row:nth-child(2)').dataset.image")
    second.locator(".part-weight").fill("0.3")
    with page.expect_request("**/search") as sent:
        page.click("#search-button")
    parts = sent.value.post_data_json["parts"]
    assert [(p.get("text"), "image" in p, p["weight"]) for p in parts] == [
        ("a red circle", False, 1),
        ("people", False, -0.5),
        (None, True, 0.3),
    ]
    expect(page.locator("#status")).to_contain_text("for “a red circle” \u2212 “people” + red.png")
    first = page.locator("#results .card").first.locator(".contributions li")
    expect(first).to_have_count(3)
    assert first.nth(1).inner_text().startswith("-0.5 \u00d7 “people”: ")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "composed-query.png"))

    # A weight out of range is refused on the page, naming the part; removing parts searches plainly.
    second.locator(".part-weight").fill("3")
    page.click("#search-button")
    expect(page.locator("#error")).to_contain_text("Part 2: the weight must be between \u22121 and 1")
    for _ in range(2):
        page.locator("#part-rows .part-remove").first.click()
    search_for(page, "a red circle")
    expect(page.locator("#results .card").first).to_be_visible()
    expect(page.locator("#results .contributions")).to_have_count(0)
