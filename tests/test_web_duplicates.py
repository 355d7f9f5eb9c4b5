# ruff: noqa: F811 - the page fixture is imported from test_web_page and requested by name
"""The page's duplicates view and photo filters in a real browser (Chromium driven by Playwright).

The server, browser and page fixtures are tests/test_web_page.py's, over this module's corpus: a few
generated images with near-duplicate copies, photos with EXIF, and a video with its re-encode.
Skipped as test_web_page is, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import pytest

from mediasearch.core.records import DocKind
from mediasearch.core.storage import LocalStore
from mediasearch.corpus.images import generate_exif_photos, generate_images, generate_near_duplicates
from mediasearch.corpus.videos import default_specs, write_corpus
from mediasearch.index.lancedb import LanceDBIndex
from mediasearch.indexing.handler import ClipHandler
from mediasearch.indexing.pipeline import ingest
from mediasearch.indexing.video import VideoOptions
from mediasearch.query.encoder import LocalEncoder
from mediasearch.query.links import MediaLinks
from mediasearch.query.search import SearchService
from tests.test_web_page import (  # noqa: F401 - fixtures, used by name
    ARTIFACTS,
    base_url,
    browser_context,
    page,
    pytestmark,
    wait_until,
)

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - pytestmark skips the module
    Page = object  # type: ignore[assignment,misc]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, clip_model) -> tuple[LocalStore, SearchService]:
    root = tmp_path_factory.mktemp("web-dups")
    store = LocalStore(root / "media")
    labels = generate_images(store, "demo/images", limit=9)
    generate_near_duplicates(store, labels, "demo/duplicates", every=3)
    generate_exif_photos(store, "demo/photos")
    specs = [s for s in default_specs("demo/videos") if s.key.endswith("cuts_a.mp4")]
    dup = [("demo/videos/cuts_a.mp4", "demo/videos/dups/cuts_a_small.mp4", 0.6, 32)]
    write_corpus(store, "demo/videos", specs=specs, duplicates=dup)
    index = LanceDBIndex(str(root / "lancedb"), "media")
    options = VideoOptions(max_scene_s=3.0, frames_per_scene=2)
    report = ingest(store, index, ClipHandler(clip_model), video_options=options, progress=False)
    assert not report.failures, report.failures
    return store, SearchService(index, LocalEncoder(clip_model), store, MediaLinks())


def find_duplicates(page: Page, kind: str, threshold: str) -> None:
    page.click("#duplicates-panel summary")
    page.select_option("#dup-kind", kind)
    page.fill("#dup-threshold", threshold)
    page.click("#dup-find")
    expect(page.locator("#dup-status")).to_contain_text("near-duplicate")


def test_the_duplicates_view_shows_groups_with_thumbnails(page: Page, corpus) -> None:
    _, service = corpus
    expected = service.duplicates(DocKind.VIDEO, 0.9, 10, 100)
    find_duplicates(page, "video", "0.9")
    clusters = page.locator("#dup-clusters .cluster")
    assert clusters.count() == len(expected.clusters) >= 1
    first = clusters.first
    expect(first.locator("h3")).to_contain_text(f"{expected.clusters[0].size} copies")
    names = first.locator("figcaption").all_inner_texts()
    assert any("cuts_a.mp4" in n for n in names) and any("cuts_a_small.mp4" in n for n in names)
    # The representative is marked; thumbnails load (each video has a scene thumbnail).
    assert first.locator(".member.representative").count() == 1
    wait_until(
        page,
        "[...document.querySelectorAll('#dup-clusters img')].every(i => i.complete && i.naturalWidth > 0)",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "duplicates-view.png"), full_page=True)


def test_a_bad_threshold_is_explained(page: Page) -> None:
    page.click("#duplicates-panel summary")
    page.fill("#dup-threshold", "1.5")
    page.click("#dup-find")
    expect(page.locator("#error")).to_contain_text("query.threshold")


def test_photo_filters_narrow_the_search(page: Page) -> None:
    page.click("#photo-filters summary")
    page.fill("#camera", "Apple iPhone 13")
    page.fill("#query", "a photo")
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text("2 results")
    names = sorted(page.locator("#results .card .name").all_inner_texts())
    assert names == ["new-york.jpg", "sydney.jpg"]
    # Each card says what its EXIF said: Sydney's 19:00 at +11:00 is 08:00 UTC.
    sydney = page.locator('#results .card:has(.name:text-is("sydney.jpg")) .photo-meta')
    expect(sydney).to_have_text("2023-01-15 08:00 · Apple iPhone 13 · -33.8688, 151.2093")
    # Southern hemisphere only: Sydney.
    for field, value in (
        ("#bbox-min-lat", "-90"),
        ("#bbox-min-lon", "-180"),
        ("#bbox-max-lat", "0"),
        ("#bbox-max-lon", "180"),
    ):
        page.fill(field, value)
    page.press("#query", "Enter")
    expect(page.locator("#status")).to_contain_text("1 result ")
    assert page.locator("#results .card .name").all_inner_texts() == ["sydney.jpg"]
    # Half a box is refused before anything is sent.
    page.fill("#bbox-max-lon", "")
    page.press("#query", "Enter")
    expect(page.locator("#error")).to_contain_text("all four corners")
