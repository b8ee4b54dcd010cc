"""A corpus of odd and hostile input, each with its expected outcome, sent to a
real server process: valid-but-odd input gets a correct answer, the rest a 4xx
whose message names the problem; never a 5xx; a rejected request changes nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server import ServerProcess

pytestmark = pytest.mark.e2e

LIMITS = {
    "CLIPSEARCH_LIMITS__MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    "CLIPSEARCH_LIMITS__MAX_FILES": "8",
    "CLIPSEARCH_LIMITS__MAX_IMAGE_PIXELS": "4000000",
    "CLIPSEARCH_LIMITS__MAX_METADATA_BYTES": "1024",
}


def encode(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def picture(size: tuple[int, int] = (32, 24), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 30, 200), (size[0] // 2, 0, size[0], size[1]))
    return image.convert(mode)


def palette_with_transparency() -> bytes:
    image = picture().convert("P")
    return encode(image, transparency=0)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit() -> bytes:
    return encode(Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)))


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(picture((40, 30)).transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif, quality=95)


def upload(name: str, data: bytes, content_type: str | None = "image/png", **data_fields: object):
    def send(client: httpx.Client) -> httpx.Response:
        file = (name, data) if content_type is None else (name, data, content_type)
        return client.post("/v1/images", files=[("files", file)], data=data_fields)

    return send


def search(body: object, raw: bytes | None = None):
    def send(client: httpx.Client) -> httpx.Response:
        if raw is not None:
            return client.post("/v1/search/text", content=raw, headers={"content-type": "application/json"})
        return client.post("/v1/search/text", json=body)

    return send


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client], httpx.Response]
    status: int
    message: str = ""  # a fragment the error message must contain


PNG = encode(picture())
CASES = [
    # odd but valid images: stored
    Case("1x1 image", upload("dot.png", encode(picture((1, 1)))), 201),
    Case("1x20000 image", upload("line.png", encode(Image.new("RGB", (1, 20000), (9, 9, 9)))), 201),
    Case("CMYK JPEG", upload("cmyk.jpg", encode(picture(mode="CMYK"), "JPEG"), "image/jpeg"), 201),
    Case("16-bit PNG", upload("deep.png", sixteen_bit()), 201),
    Case("palette PNG with transparency", upload("pal.png", palette_with_transparency()), 201),
    Case("LA image", upload("la.png", encode(picture(mode="LA"))), 201),
    Case("RGBA image", upload("rgba.png", encode(picture(mode="RGBA"))), 201),
    Case("animated GIF", upload("anim.gif", animated("GIF"), "image/gif"), 201),
    Case("animated WebP", upload("anim.webp", animated("WEBP"), "image/webp"), 201),
    Case("EXIF-rotated JPEG", upload("rotated.jpg", exif_rotated(), "image/jpeg"), 201),
    Case("wrong content type", upload("png.txt", PNG, "text/plain"), 201),
    Case("missing content type", upload("bare", PNG, None), 201),
    Case("non-ASCII file name", upload("bild-ä-画像.png", PNG), 201),
    # bad images: refused, naming the file and the problem
    Case("empty file", upload("empty.png", b""), 400, "empty.png: the file is empty"),
    Case("not an image", upload("notes.png", b"just some text"), 400, "not an image"),
    Case("truncated JPEG", upload("cut.jpg", encode(picture((64, 64)), "JPEG")[:300]), 400, "cannot be decoded"),
    Case("truncated PNG", upload("cut.png", PNG[:50]), 400, "cannot be decoded"),
    Case(
        "decompression bomb",
        upload("bomb.png", encode(Image.new("L", (3000, 3000)))),
        400,
        "3000x3000 = 9000000 pixels, more than the limit of 4000000",
    ),
    Case("file over the upload limit", upload("big.png", b"\x89PNG" + bytes(3 * 1024 * 1024)), 413, "larger than"),
    Case(
        "too many files",
        lambda c: c.post("/v1/images", files=[("files", (f"{i}.png", PNG)) for i in range(9)]),
        400,
        "9 files sent; at most 8",
    ),
    # bad metadata and ids
    Case("metadata not an object", upload("m.png", PNG, metadata="[1, 2]"), 422, "must be a JSON object"),
    Case("metadata not JSON", upload("m.png", PNG, metadata="{oops"), 422, "not valid JSON"),
    Case("metadata too large", upload("m.png", PNG, metadata=json.dumps({"x": "y" * 2000})), 413, "limit is 1024"),
    Case("metadata nested deeply", upload("m.png", PNG, metadata="[" * 100_000), 422, "nested too deeply"),
    Case("id with path characters", upload("i.png", PNG, ids="../../etc/passwd"), 400, "is not allowed"),
    Case("id over the length limit", upload("i.png", PNG, ids="x" * 200), 400, "the limit is 128"),
    Case("more ids than files", upload("i.png", PNG, ids=["a", "b"]), 422, "2 ids for 1 files"),
    # queries
    Case("empty query", search({"query": ""}), 422, "query"),
    Case("blank query", search({"query": " \t\n "}), 422, "query is blank"),
    Case("query longer than the model's context", search({"query": "a red circle " * 40}), 200),
    Case("query over the length limit", search({"query": "x" * 3000}), 422, "the limit is 2000"),
    Case("non-ASCII query", search({"query": "ein roter Kreis 🔴 赤い円"}), 200),
    Case("k of 0", search({"query": "red", "k": 0}), 422, "k"),
    Case("negative k", search({"query": "red", "k": -5}), 422, "k"),
    Case("huge k", search({"query": "red", "k": 10**9}), 422, "k must be between 1 and 1000"),
    Case("k not a number", search({"query": "red", "k": "ten"}), 422, "k"),
    Case("malformed JSON", search(None, raw=b'{"query": "red",'), 422, ""),
    Case("JSON that is not an object", search(["red"]), 422, ""),
    Case("unknown filter field", search({"query": "red", "filter": {"no_such_field": "x"}}), 200),
    Case("wrong filter type", search({"query": "red", "filter": {"album": {"in": "notalist"}}}), 422, "filter"),
    Case("filter operator unknown", search({"query": "red", "filter": {"album": {"gt": 3}}}), 422, "filter"),
    Case("filter field with SQL", search({"query": "red", "filter": {"a') OR 1=1 --": "x"}}), 400, "not allowed"),
    # other routes
    Case("unknown id", lambda c: c.get("/v1/images/no-such-id"), 404, "no item with id 'no-such-id'"),
    Case("delete of an unknown id", lambda c: c.delete("/v1/images/no-such-id"), 404, "no item"),
    Case(
        "classify without labels",
        lambda c: c.post("/v1/classify", files={"file": ("q.png", PNG)}),
        422,
        "labels",
    ),
    Case("embed no texts", lambda c: c.post("/v1/embed/text", json={"texts": []}), 422, "texts"),
    Case("unknown route", lambda c: c.get("/v1/nothing"), 404, "Not Found"),
    Case("wrong method", lambda c: c.put("/v1/search/text", json={}), 405, "Method Not Allowed"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[httpx.Client]:
    server = ServerProcess(tmp_path_factory.mktemp("hostile") / "data", "--model", "demo", env=LIMITS)
    with server, server.client() as http:
        yield http


def test_the_corpus_holds_at_least_thirty_kinds_of_input():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_odd_input_gets_its_expected_answer_and_rejections_change_nothing(client, case):
    before = client.get("/v1/stats").json()["count"]
    response = case.send(client)
    assert response.status_code == case.status, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert case.message in error["message"], error
        assert client.get("/v1/stats").json()["count"] == before


def test_an_exif_rotated_jpeg_embeds_like_the_upright_picture(client):
    upright = encode(picture((40, 30)), "JPEG", quality=95)
    rows = client.post(
        "/v1/embed/image", files=[("files", ("a.jpg", exif_rotated())), ("files", ("b.jpg", upright))]
    ).json()["embeddings"]
    assert float(np.dot(rows[0], rows[1])) > 0.99
