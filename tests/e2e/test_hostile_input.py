"""A corpus of odd and hostile input, each with its expected outcome, sent to a
real server process: valid-but-odd input gets a correct answer, the rest a 4xx
whose message names the problem; never a 5xx; a rejected request changes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from PIL import Image

from harness.server import ServerProcess

# Only the tests that start a server are marked e2e.

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
class Stored:
    """What the thumbnail of a stored odd image must look like: its size, and the colour at two points."""

    size: tuple[int, int]
    left: tuple[int, int, int]  # at a quarter of the width, half the height
    right: tuple[int, int, int]  # at three quarters of the width


RED, BLUE = (200, 30, 30), (30, 30, 200)
HALVES = Stored((32, 24), RED, BLUE)  # picture(): red left half, blue right half


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client], httpx.Response]
    status: int
    message: str = ""  # a fragment the error message must contain
    stored: Stored | None = None  # for an odd but valid image: what was kept


PNG = encode(picture())
CASES = [
    # odd but valid images: stored
    Case(
        "1x1 image", upload("dot.png", encode(picture((1, 1)))), 201, stored=Stored((1, 1), BLUE, BLUE)
    ),  # the blue half covers x >= 0
    Case(
        "1x20000 image",
        upload("line.png", encode(Image.new("RGB", (1, 20000), (9, 9, 9)))),
        201,
        stored=Stored((1, 256), (9, 9, 9), (9, 9, 9)),
    ),
    Case("CMYK JPEG", upload("cmyk.jpg", encode(picture(mode="CMYK"), "JPEG"), "image/jpeg"), 201, stored=HALVES),
    Case("16-bit PNG", upload("deep.png", sixteen_bit()), 201, stored=Stored((16, 16), (156,) * 3, (156,) * 3)),
    Case(
        "palette PNG with transparency",
        upload("pal.png", palette_with_transparency()),
        201,
        stored=HALVES,  # palette index 0 is transparent, and neither half uses it
    ),
    Case("LA image", upload("la.png", encode(picture(mode="LA"))), 201, stored=Stored((32, 24), (83,) * 3, (39,) * 3)),
    Case("RGBA image", upload("rgba.png", encode(picture(mode="RGBA"))), 201, stored=HALVES),
    Case(
        "animated GIF",
        upload("anim.gif", animated("GIF"), "image/gif"),
        201,
        stored=Stored((16, 16), (255, 0, 0), (255, 0, 0)),
    ),
    Case(
        "animated WebP",
        upload("anim.webp", animated("WEBP"), "image/webp"),
        201,
        stored=Stored((16, 16), (255, 0, 0), (255, 0, 0)),
    ),
    Case(
        "EXIF-rotated JPEG",
        upload("rotated.jpg", exif_rotated(), "image/jpeg"),
        201,
        stored=Stored((40, 30), RED, BLUE),
    ),
    Case("wrong content type", upload("png.txt", PNG, "text/plain"), 201, stored=HALVES),
    Case("missing content type", upload("bare", PNG, None), 201, stored=HALVES),
    Case("non-ASCII file name", upload("bild-ä-画像.png", PNG), 201, stored=HALVES),
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
    Case("metadata nested deeply", upload("m.png", PNG, metadata="[" * 2000), 422, "nested too deeply"),
    Case("metadata field of 100 KB", upload("m.png", PNG, metadata="[" * 100_000), 413, "a form field is too large"),
    Case("id with path characters", upload("i.png", PNG, ids="../../etc/passwd"), 400, "is not allowed"),
    Case("id over the length limit", upload("i.png", PNG, ids="x" * 200), 400, "the limit is 128"),
    Case("more ids than files", upload("i.png", PNG, ids=["a", "b"]), 422, "2 ids for 1 files"),
    # queries
    Case("empty query", search({"query": ""}), 422, "query: String should have at least 1 character"),
    Case("blank query", search({"query": " \t\n "}), 422, "query is blank"),
    Case("query longer than the model's context", search({"query": "a red circle " * 40}), 200),
    Case("query over the length limit", search({"query": "x" * 3000}), 422, "the limit is 2000"),
    Case("non-ASCII query", search({"query": "ein roter Kreis 🔴 赤い円"}), 200),
    Case("k of 0", search({"query": "red", "k": 0}), 422, "k: Input should be greater than or equal to 1"),
    Case("negative k", search({"query": "red", "k": -5}), 422, "k: Input should be greater than or equal to 1"),
    Case("huge k", search({"query": "red", "k": 10**9}), 422, "k must be between 1 and 1000"),
    Case("k not a number", search({"query": "red", "k": "ten"}), 422, "k: Input should be a valid integer"),
    Case("malformed JSON", search(None, raw=b'{"query": "red",'), 422, "the body is not valid JSON"),
    Case("JSON that is not an object", search(["red"]), 422, "the body must be a JSON object"),
    Case("unknown filter field", search({"query": "red", "filter": {"no_such_field": "x"}}), 200),
    Case(
        "wrong filter type",
        search({"query": "red", "filter": {"album": {"in": "notalist"}}}),
        422,
        'filter.album: must be a string, a number, a boolean or {"in": [values]}',
    ),
    Case(
        "filter operator unknown",
        search({"query": "red", "filter": {"album": {"gt": 3}}}),
        422,
        'filter.album: must be a string, a number, a boolean or {"in": [values]}',
    ),
    Case("filter field with SQL", search({"query": "red", "filter": {"a') OR 1=1 --": "x"}}), 400, "not allowed"),
    # metadata a read could not return (issue 10): refused before anything is stored
    Case(
        "metadata 256 levels deep",
        upload("m.png", PNG, metadata='{"a":' * 256 + "1" + "}" * 256),
        422,
        "nested more than 16 levels deep",
    ),
    Case("metadata with NaN", upload("m.png", PNG, metadata='{"x": NaN}'), 422, "NaN is not a JSON value"),
    Case(
        "metadata with Infinity", upload("m.png", PNG, metadata='{"x": Infinity}'), 422, "Infinity is not a JSON value"
    ),
    Case("metadata with 1e999", upload("m.png", PNG, metadata='{"x": 1e999}'), 422, "numbers must be finite, not inf"),
    Case(
        "metadata integer beyond 64 bits",
        upload("m.png", PNG, metadata='{"x": 123456789012345678901234567890}'),
        422,
        "is outside the 64-bit range",
    ),
    Case("metadata key with a dot", upload("m.png", PNG, metadata='{"a.b": 1}'), 422, "key 'a.b' is not allowed"),
    Case(
        "metadata key of 10,000 characters",
        upload("m.png", PNG, metadata=json.dumps({"k" * 10_000: 1})),
        422,
        "must be 1 to 64 characters long",
    ),
    Case("metadata key with a lone surrogate", upload("m.png", PNG, metadata='{"k\\ud800": 1}'), 422, "is not allowed"),
    Case(
        "metadata value with a lone surrogate", upload("m.png", PNG, metadata='{"x": "\\udc80"}'), 422, "lone surrogate"
    ),
    Case("metadata with a non-ASCII key", upload("m.png", PNG, metadata='{"ключ": "значение"}'), 201),
    # filters that cannot match: 400, never 500
    Case(
        "filter integer beyond 64 bits",
        search({"query": "red", "filter": {"big": 123456789012345678901234567890}}),
        400,
        "filter on 'big': the integer 123456789012345678901234567890 is outside the 64-bit range",
    ),
    Case("filter number 1e308", search({"query": "red", "filter": {"x": 1e308}}), 200),
    Case(
        "filter field of 10,000 characters",
        search({"query": "red", "filter": {"k" * 10_000: 1}}),
        400,
        "is longer than 256 characters",
    ),
    Case("filter field with a space", search({"query": "red", "filter": {"a b": 1}}), 400, "is not allowed"),
    Case("filter on a non-ASCII key", search({"query": "red", "filter": {"ключ": "значение"}}), 200),
    # bodies: a JSON body has its own, small limit
    Case("JSON body over 1 MiB", search({"query": "red " * 300_000}), 413, "the limit is 1048576"),
    # texts longer than the model's context
    Case(
        "long query with truncate=false",
        search({"query": "a red circle " * 20 + "a blue square", "truncate": False}),
        422,
        "the model reads at most 32",
    ),
    Case(
        "long texts to embed with truncate=false",
        lambda c: c.post("/v1/embed/text", json={"texts": ["red " * 40], "truncate": False}),
        422,
        "a text needs 42 tokens; the model reads at most 32",
    ),
    # classify
    Case(
        "classify with a repeated label",
        lambda c: c.post("/v1/classify", files={"file": ("q.png", PNG)}, data={"labels": ["red", "blue", "red"]}),
        422,
        "labels must be distinct; given more than once: ['red']",
    ),
    Case(
        "classify with two images",
        lambda c: c.post(
            "/v1/classify", files=[("file", ("a.png", PNG)), ("file", ("b.png", PNG))], data={"labels": ["red", "blue"]}
        ),
        422,
        "classify takes one image",
    ),
    Case(
        "classify with 1,001 labels",
        lambda c: c.post(
            "/v1/classify", files={"file": ("q.png", PNG)}, data={"labels": [f"l{i}" for i in range(1001)]}
        ),
        422,
        "1001 labels; at most 1000",
    ),
    # OpenAI compatibility
    Case(
        "OpenAI token arrays",
        lambda c: c.post("/v1/embeddings", json={"model": "demo", "input": [1, 2, 3]}),
        422,
        "token arrays are not accepted here",
    ),
    Case("OpenAI model list", lambda c: c.get("/v1/models"), 200),
    # other routes
    Case("unknown id", lambda c: c.get("/v1/images/no-such-id"), 404, "no item with id 'no-such-id'"),
    Case("delete of an unknown id", lambda c: c.delete("/v1/images/no-such-id"), 404, "no item"),
    Case(
        "classify without labels",
        lambda c: c.post("/v1/classify", files={"file": ("q.png", PNG)}),
        422,
        "labels: Field required",
    ),
    Case(
        "embed no texts",
        lambda c: c.post("/v1/embed/text", json={"texts": []}),
        422,
        "texts: List should have at least 1 item after validation, not 0",
    ),
    Case("unknown route", lambda c: c.get("/v1/nothing"), 404, "Not Found"),
    Case("wrong method", lambda c: c.put("/v1/search/text", json={}), 405, "Method Not Allowed"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[httpx.Client]:
    server = ServerProcess(tmp_path_factory.mktemp("hostile") / "data", "--model", "demo", env=LIMITS)
    with server, server.client() as http:
        yield http


def test_the_corpus_holds_the_72_kinds_of_input_the_docs_list():
    assert len(CASES) >= 72
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_each_odd_input_gets_its_expected_answer_and_rejections_change_nothing(client, case):
    before = client.get("/v1/stats").json()["count"]
    response = case.send(client)
    assert response.status_code == case.status, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert case.message in error["message"], error
        assert client.get("/v1/stats").json()["count"] == before
    if case.stored is not None:
        [item] = response.json()["items"]
        thumbnail = Image.open(io.BytesIO(client.get(f"/v1/images/{item['id']}/thumbnail").content)).convert("RGB")
        assert thumbnail.size == case.stored.size
        width, height = thumbnail.size
        for x, colour in ((width // 4, case.stored.left), (3 * width // 4, case.stored.right)):
            got = thumbnail.getpixel((x, height // 2))
            assert isinstance(got, tuple)
            assert max(abs(a - b) for a, b in zip(got, colour, strict=True)) <= 24, (x, got, colour)  # JPEG


@pytest.mark.e2e
def test_an_exif_rotated_jpeg_embeds_like_the_upright_picture(client):
    upright = encode(picture((40, 30)), "JPEG", quality=95)
    rows = client.post(
        "/v1/embed/image", files=[("files", ("a.jpg", exif_rotated())), ("files", ("b.jpg", upright))]
    ).json()["embeddings"]
    assert float(np.dot(rows[0], rows[1])) > 0.99


@pytest.mark.e2e
def test_after_the_whole_corpus_every_read_and_filtered_search_still_answers(client):
    assert client.get("/v1/images").status_code == 200
    for flt in ({"album": "a"}, {"n": {"in": [1, 2]}}, {"ключ": "значение"}):
        response = client.post("/v1/search/text", json={"query": "red", "filter": flt})
        assert response.status_code == 200, response.text
    for item in client.get("/v1/images").json()["items"]:
        assert client.get(f"/v1/images/{item['id']}").status_code == 200
        assert client.get(f"/v1/images/{item['id']}/similar", params={"filter": '{"x": 1}'}).status_code == 200


@pytest.mark.e2e
def test_a_chunked_json_body_over_the_limit_is_answered_413_before_the_rest_is_sent(client):
    """A raw socket streams a chunked body and reads as soon as an answer is there:
    the 413 must come while most of the 300 MiB is still unsent."""
    port = int(str(client.base_url).rsplit(":", 1)[1].rstrip("/"))
    chunk = b"x" * (256 * 1024)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/search/text HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while sent < 300 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        answer = b""
        # The 413 says Connection: close; closing on unread data may end in a reset once the answer is out.
        with contextlib.suppress(ConnectionResetError):
            while part := sock.recv(65536):
                answer += part
    answer_text = answer.decode("latin-1")
    assert answer_text.startswith("HTTP/1.1 413"), answer_text[:200]
    assert "the request body passed 1048576 bytes" in answer_text
    assert sent < 16 * 1024 * 1024, f"{sent} bytes were sent before the answer"
