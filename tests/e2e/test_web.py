"""The search page and the API docs in a real browser: headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import math
import shutil
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from demo.scenes import Scene, SceneObject
from harness.server import ROOT, ServerProcess
from tests.e2e.test_server import one_object, png
from tests.prerequisites import require_or_skip

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


def content_id(data: bytes) -> str:
    """The id `clipsearch index` gives a file: the first 32 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()[:32]


def test_the_page_adds_images_searches_by_text_and_by_a_dropped_image_and_finds_more_like_this(playwright, tmp_path):
    photos = {
        "red-circle.png": one_object("circle", "red", 1),
        "blue-square.png": one_object("square", "blue", 2),
        "yellow-star.png": one_object("star", "yellow", 3),
        "red-square.png": one_object("square", "red", 4),
    }
    for name, scene in photos.items():
        (tmp_path / name).write_bytes(png(scene, size=128))
    names = {content_id((tmp_path / name).read_bytes()): name for name in photos}
    with ServerProcess(tmp_path / "data", "--model", "demo") as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server.url)
        expect = playwright.expect
        expect(page.locator("#model")).to_have_text("demo")
        expect(page.locator("#count")).to_have_text("0")
        expect(page.locator("#demo-banner")).to_be_visible()
        expect(page.locator("#demo-banner")).to_contain_text("toy CLIP trained on generated coloured shapes")
        expect(page.locator("#message")).to_have_text("no images yet: add some")

        page.set_input_files("#add-images", [str(tmp_path / name) for name in photos])
        expect(page.locator("#message")).to_have_text("added 4 images")
        expect(page.locator("#count")).to_have_text("4")
        # The page names each file as the CLI does, so both find the files the other added.
        with server.client() as client:
            assert {item["id"] for item in client.get("/v1/images").json()["items"]} == set(names)
        # What was just added shows at once, newest first.
        cards = page.locator("#results .card")
        ids = page.locator("#results .card .id")
        expect(cards).to_have_count(4)
        assert [names[i] for i in ids.all_inner_texts()] == list(reversed(photos))

        page.fill("#query", "a red circle")
        page.press("#query", "Enter")
        expect(page.locator("#message")).to_have_text("4 results for “a red circle”")
        expect(cards).to_have_count(4)
        first = cards.first
        first_id = ids.first.inner_text()
        assert names[first_id] == "red-circle.png"
        metadata = first.locator(".metadata").inner_text()
        assert metadata == "{}"
        assert first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
        scores = [float(text) for text in page.locator("#results .card .score").all_inner_texts()]
        assert scores == sorted(scores, reverse=True)

        # A score cut-off between two results: only those above it, and how many passed.
        with server.client() as client:
            exact = [
                h["score"] for h in client.post("/v1/search/text", json={"query": "a red circle"}).json()["results"]
            ]
        gap = max(range(len(exact) - 1), key=lambda i: exact[i] - exact[i + 1])
        assert exact[gap] - exact[gap + 1] > 0.01
        cut_off = math.floor(exact[gap] * 100) / 100
        page.fill("#min-score", f"{cut_off:.2f}")
        page.press("#min-score", "Enter")
        passed = gap + 1
        expect(page.locator("#message")).to_have_text(f"{passed} results with score ≥ {cut_off:.2f} for “a red circle”")
        expect(cards).to_have_count(passed)
        page.fill("#min-score", "")
        page.press("#min-score", "Enter")
        expect(page.locator("#message")).to_have_text("4 results for “a red circle”")

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

        # The same files again: recognised by their content, nothing stored twice.
        page.set_input_files("#add-images", [str(tmp_path / name) for name in photos])
        expect(page.locator("#message")).to_have_text("added 0 images, 4 already there")
        expect(page.locator("#count")).to_have_text("4")
        browser.close()
    assert SCREENSHOT.stat().st_size > 10_000


def test_seventy_files_go_in_batches_of_the_servers_limit_and_the_newest_show_before_any_search(playwright, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = []
    for i in range(70):
        scene = Scene(
            (SceneObject(("circle", "square", "star")[i % 3], "red", "large", "centre"),), (60 + i, 90, 90), False, i
        )
        files.append(folder / f"{i:02d}.png")
        files[-1].write_bytes(png(scene))
    with ServerProcess(tmp_path / "data", "--model", "demo") as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        adds = []  # the answers to POST /v1/images
        page.on("response", lambda r: adds.append(r) if r.request.method == "POST" and "/v1/images" in r.url else None)
        page.goto(server.url)
        expect = playwright.expect
        expect(page.locator("#count")).to_have_text("0")
        page.set_input_files("#add-images", [str(f) for f in files])
        expect(page.locator("#message")).to_have_text("added 70 images", timeout=120_000)
        expect(page.locator("#count")).to_have_text("70")
        # Two requests: the server's default limit is 64 files a request.
        assert [len(r.json()["items"]) for r in adds] == [64, 6]
        progress = page.locator("#progress")
        expect(progress).to_be_visible()
        assert (progress.get_attribute("max"), progress.evaluate("bar => bar.value")) == ("70", 70)

        # A fresh visit: the newest items show before any search, newest first.
        page.reload()
        expect(page.locator("#message")).to_have_text("the 24 newest of 70 images")
        ids = page.locator("#results .card .id")
        expect(ids).to_have_count(24)
        assert ids.all_inner_texts() == [content_id(f.read_bytes()) for f in reversed(files[-24:])]
        browser.close()


def test_the_api_docs_render_their_operations_with_no_network(playwright, tmp_path):
    with ServerProcess(tmp_path / "data", "--model", "demo") as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context()
        elsewhere: list[str] = []

        def only_this_server(route):
            # An air-gapped host: anything not on this server fails, as a CDN would there.
            if urlsplit(route.request.url).netloc == urlsplit(server.url).netloc:
                route.continue_()
            else:
                elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", only_this_server)
        page = context.new_page()
        page.goto(f"{server.url}/docs")
        expect = playwright.expect
        paths = page.locator(".opblock-summary-path")
        expect(paths.first).to_be_visible(timeout=30_000)
        assert {"/v1/search/text", "/v1/images", "/v1/classify", "/v1/limits"} <= set(paths.all_inner_texts())
        expect(page.locator(".information-container .title")).to_contain_text("clipsearch")
        assert elsewhere == []
        browser.close()
