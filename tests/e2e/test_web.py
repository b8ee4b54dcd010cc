"""The search page in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.test_server import one_object, png
from tests.prerequisites import require_or_skip
from tests.server import ROOT, ServerProcess

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "artifacts" / "web-search.png"


@pytest.fixture
def playwright() -> ModuleType:
    """Playwright's sync API, with Debian's Chromium to drive: a failure in CI without them, a skip elsewhere."""
    if importlib.util.find_spec("playwright") is None:
        require_or_skip("Playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        require_or_skip("Chromium is not installed (.ci/run installs it)")
    from playwright import sync_api

    return sync_api


def test_the_page_adds_images_searches_by_text_and_finds_more_like_this(playwright, tmp_path):
    photos = {
        "red-circle.png": one_object("circle", "red", 1),
        "blue-square.png": one_object("square", "blue", 2),
        "yellow-star.png": one_object("star", "yellow", 3),
        "red-square.png": one_object("square", "red", 4),
    }
    for name, scene in photos.items():
        (tmp_path / name).write_bytes(png(scene, size=128))
    with ServerProcess(tmp_path / "data", "--model", "demo") as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server.url)
        expect = playwright.expect
        expect(page.locator("#model")).to_have_text("demo")
        expect(page.locator("#count")).to_have_text("0")

        page.set_input_files("#add-images", [str(tmp_path / name) for name in photos])
        expect(page.locator("#message")).to_have_text("added 4 images")
        expect(page.locator("#count")).to_have_text("4")

        page.fill("#query", "a red circle")
        page.press("#query", "Enter")
        cards = page.locator("#results .card")
        expect(cards).to_have_count(4)
        first = cards.first
        ids = page.locator("#results .card .id")
        first_id = ids.first.inner_text()
        metadata = first.locator(".metadata").inner_text()
        assert metadata == "{}"
        assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(page.locator("#message")).to_have_text("4 results for “a red circle”")
        scores = [float(text) for text in page.locator("#results .card .score").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)

        first.locator(".more").click()
        expect(page.locator("#message")).to_have_text(f"3 results like {first_id}")
        assert first_id not in ids.all_inner_texts()
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
