"""The search page in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import base64
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
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


def names_by_id(server: ServerProcess, files: dict[str, bytes]) -> dict[str, str]:
    """Which stored id holds which file (the page makes its own ids): the stored embedding equal to the file's."""
    with server.client() as client:
        items = client.get("/v1/images").json()["items"]
        names = {}
        for name, data in files.items():
            row = np.asarray(client.post("/v1/embed/image", files=[("files", (name, data))]).json()["embeddings"][0])
            for item in items:
                stored = np.asarray(client.get(f"/v1/images/{item['id']}/embedding").json()["embeddings"][0])
                if float(row @ stored) > 0.9999:
                    names[item["id"]] = name
    return names


def test_the_page_adds_images_searches_by_text_and_by_a_dropped_image_and_finds_more_like_this(playwright, tmp_path):
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

        names = names_by_id(server, {name: (tmp_path / name).read_bytes() for name in photos})
        assert sorted(names.values()) == sorted(photos)

        page.fill("#query", "a red circle")
        page.press("#query", "Enter")
        cards = page.locator("#results .card")
        expect(cards).to_have_count(4)
        first = cards.first
        ids = page.locator("#results .card .id")
        first_id = ids.first.inner_text()
        assert names[first_id] == "red-circle.png"
        metadata = first.locator(".metadata").inner_text()
        assert metadata == "{}"
        assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        expect(page.locator("#message")).to_have_text("4 results for “a red circle”")
        scores = [float(text) for text in page.locator("#results .card .score").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)

        first.locator(".more").click()
        expect(page.locator("#message")).to_have_text(f"3 results like {first_id}")
        assert first_id not in ids.all_inner_texts()
        # Drop a picture of a blue square on the drop zone: a search by image, the blue square first.
        dropped = base64.b64encode(png(one_object("square", "blue", 9), size=128)).decode()
        transfer = page.evaluate_handle(
            """(b64) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], "query.png", { type: "image/png" }));
                return transfer;
            }""",
            dropped,
        )
        page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
        expect(page.locator("#message")).to_have_text("4 results like query.png")
        assert names[ids.first.inner_text()] == "blue-square.png"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
