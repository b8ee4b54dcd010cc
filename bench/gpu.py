"""In-process figures of the CLIP towers, the old path and the new one side by side in one run (benchmark 5).

    python -m bench.gpu                              # on a CUDA machine, about a minute
    python -m bench.gpu --device cpu --smoke         # tiny sizes (the test suite runs this)
    python -m bench.gpu --device cpu --preprocess-only --workers 2   # JPEG decode+preprocess on the CPU

ViT-B-32 with random weights (the same seed for both paths). The old path is
the service as of 07c49d5, rebuilt here from open_clip's public API: fp32
weights under fp16 autocast on CUDA, open_clip's transform on the full decode,
float32 batches pinned afresh, the text length found on the device. The new
path is the service's towers (`load_clip`, pipeline `fast`, precision auto).
Every section is measured on its own: one that fails prints its error, and the
others still run. `--json PATH` writes the figures for bench.gpu_server's table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from bench.common import photos, queries
from models.batcher import BatchLimits
from models.clip import ClipTowers, Precision, encode_text_trimmed, load_clip, resolve_precision
from models.encoder import Encoder
from models.images import decode_image, make_thumbnail
from models.tokenizer import fast_tokenizer

MODEL = "ViT-B-32"
MAX_PIXELS = 50_000_000
REQUEST = 32  # images per ingest request, as bench.gpu_server sends them


@dataclass(frozen=True)
class Sizes:
    tower_batch: int
    tower_batches: int
    jpegs: int
    workers: int
    text_calls: int
    text_batch: int
    texts: int
    thumbnails: int


FULL = Sizes(
    tower_batch=256,
    tower_batches=20,
    jpegs=4096,
    workers=16,
    text_calls=200,
    text_batch=1024,
    texts=32768,
    thumbnails=256,
)
SMOKE = Sizes(tower_batch=4, tower_batches=2, jpegs=8, workers=2, text_calls=3, text_batch=8, texts=16, thumbnails=4)


@dataclass
class Report:
    """Rows of (figure, old, new, unit); failures are kept with their error."""

    rows: list[tuple[str, float | None, float | None, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, figure: str, old: float | None, new: float | None, unit: str) -> None:
        self.rows.append((figure, old, new, unit))
        print(f"  {figure:<48} old {_fmt(old):>10}  new {_fmt(new):>10}  {unit}{_ratio(old, new, unit)}", flush=True)

    def figures(self) -> dict[str, dict[str, float | str | None]]:
        return {figure: {"old": old, "new": new, "unit": unit} for figure, old, new, unit in self.rows}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if value < 10 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ratio(old: float | None, new: float | None, unit: str) -> str:
    if not old or not new:
        return ""
    faster = old / new if unit == "ms" else new / old
    return f"   ({faster:.1f}x)"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class OldPath:
    """The towers as served at 07c49d5: fp32 weights, autocast on CUDA, float32 pixels, length found on the device."""

    def __init__(self, device: torch.device) -> None:
        torch.manual_seed(0)
        model, _, self.preprocess = open_clip.create_model_and_transforms(MODEL, device=device)
        # On the CPU the old service cast the whole model to bf16 where `auto` chose it, as now.
        self.dtype = torch.bfloat16 if resolve_precision("auto", device) is Precision.BF16 else torch.float32
        self.model = model.to(self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(MODEL)
        self.device = device

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda")

    def prepare(self, data: bytes) -> torch.Tensor:
        pixels: torch.Tensor = self.preprocess(decode_image(data, max_pixels=MAX_PIXELS))
        return pixels

    def encode_images(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        pixels = torch.stack(list(batch))
        if self.device.type == "cuda":
            pixels = pixels.pin_memory()
        pixels = pixels.to(self.device, dtype=self.dtype, non_blocking=True)
        with torch.inference_mode(), self.autocast():
            features = self.model.encode_image(pixels)
        rows: np.ndarray = F.normalize(features.float(), dim=-1).cpu().numpy()
        return rows

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), self.autocast():
            features = encode_text_trimmed(self.model, tokens)  # finds the length with .item()
        rows: np.ndarray = F.normalize(features.float(), dim=-1).cpu().numpy()
        return rows


def new_towers(device: str, model: str = MODEL) -> ClipTowers:
    torch.manual_seed(0)  # the same random weights as OldPath
    return load_clip(model, "none", device, fallback_to_demo=False)


def section(report: Report, name: str, run: Callable[[], None]) -> None:
    """Run one section; a failure is printed and recorded, and the benchmark goes on."""
    try:
        run()
    except Exception as exc:
        report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"  {name} FAILED: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()


def timed(run: Callable[[], object], repeat: int) -> float:
    """Seconds per call (after one warm-up call), the device drained before the clock stops."""
    run()
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        run()
    sync()
    return (time.perf_counter() - started) / repeat


def median_ms(run: Callable[[], object], calls: int) -> float:
    """Median wall time of one call in ms: a call returns host rows, so it includes the wait for the device."""
    for _ in range(3):
        run()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def preprocess_rate(prepare: Callable[[bytes], object], jpegs: list[bytes], workers: int, count: int) -> float:
    """JPEG decode+preprocess images/s from `workers` threads."""
    items = [jpegs[i % len(jpegs)] for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(prepare, items[: workers * 2]))
        started = time.perf_counter()
        list(pool.map(prepare, items))
    return count / (time.perf_counter() - started)


def old_images_per_second(old: OldPath, jpegs: list[bytes], count: int, batch: int, workers: int) -> float:
    items = [jpegs[i % len(jpegs)] for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        pending: list[torch.Tensor] = []
        for pixels in pool.map(old.prepare, items):  # map() keeps decoding ahead of the batch being encoded
            pending.append(pixels)
            if len(pending) == batch:
                old.encode_images(pending)
                pending = []
        if pending:
            old.encode_images(pending)
        sync()
    return count / (time.perf_counter() - started)


def new_images_per_second(towers: ClipTowers, jpegs: list[bytes], count: int, batch: int, in_flight: int) -> float:
    """Through the service's Encoder, as the ingest route calls it: requests of REQUEST images, many in flight."""
    requests = [
        [(f"{i}.jpg", jpegs[(start + i) % len(jpegs)]) for i in range(min(REQUEST, count - start))]
        for start in range(0, count, REQUEST)
    ]

    async def run(todo: list[list[tuple[str, bytes]]]) -> float:
        encoder = Encoder(towers, BatchLimits(batch, 0.002, 100_000), max_pixels=MAX_PIXELS)
        encoder.start()
        queue = iter(todo)

        async def client() -> None:
            for images in queue:
                await encoder.embed_images(images)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(in_flight)))
        seconds = time.perf_counter() - started
        await encoder.stop()
        return seconds

    asyncio.run(run(requests[: max(1, in_flight)]))  # warm-up
    return count / asyncio.run(run(requests))


def thumbnails(report: Report, towers: ClipTowers, jpegs: list[bytes], count: int, device: torch.device) -> None:
    """ms per 640x480 JPEG: a thumbnail from a reduced-scale CPU decode vs resize + encode_jpeg on the GPU."""
    items = [jpegs[i % len(jpegs)] for i in range(count)]

    def cpu() -> None:
        for data in items:
            make_thumbnail(decode_image(data, max_pixels=MAX_PIXELS, reduce_to=(1, 256)))

    report.add("thumbnail ms/img: CPU reduced-scale decode", None, timed(cpu, 1) / count * 1000, "ms")
    decoder = getattr(towers.image, "device_decoder", None)
    if device.type == "cuda" and decoder is not None:
        # The service's path: one decode on the GPU gives the pixels and the thumbnail; the row is
        # what the thumbnails add to the decode and preprocess the image needs anyway.
        with_thumbnails = timed(lambda: decoder.decode_with_thumbnails(items), 3)
        without = timed(lambda: decoder.decode(items), 3)
        report.add(
            "thumbnail ms/img: GPU resize+encode_jpeg after the decode",
            None,
            (with_thumbnails - without) / count * 1000,
            "ms",
        )


def eager_text(report: Report, towers: ClipTowers, batch: Callable[[int], list[str]], calls: int) -> None:
    """One query with the CUDA graphs switched off: what the graphs save."""
    tower = towers.text
    graphs = tower.graphs  # type: ignore[attr-defined]
    tower.graphs = None  # type: ignore[attr-defined]
    try:
        report.add(
            "text tower latency, batch 1, eager (no graphs)",
            None,
            median_ms(lambda: tower.encode(batch(1)), calls),
            "ms",
        )
    finally:
        tower.graphs = graphs  # type: ignore[attr-defined]


def device_decode_check(report: Report, towers: ClipTowers, jpegs: list[bytes]) -> None:
    """How many of the benchmark's JPEGs nvJPEG decodes in one batch call (all of them, or the fallback is in use)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    decoder = getattr(towers.image, "device_decoder", None)
    if decoder is None:
        raise RuntimeError("the image tower has no device decoder on CUDA")
    sample = jpegs[:8]
    decode_jpeg(
        [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in sample], mode=ImageReadMode.RGB, device="cuda"
    )
    decoded = sum(pixels is not None for pixels in decoder.decode(sample))
    report.add(f"JPEGs nvJPEG decoded, of {len(sample)}", None, float(decoded), "")


def exactness(report: Report, old: OldPath, towers: ClipTowers) -> None:
    """Lowest cosine between the new path and open_clip's fp32 reference on scikit-image's photographs."""
    import skimage.data
    from PIL import Image

    jpegs = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "camera"):
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    with torch.inference_mode():
        reference = old.model.float()
        pixels = torch.stack([old.preprocess(Image.open(io.BytesIO(d)).convert("RGB")) for d in jpegs])
        theirs = F.normalize(reference.encode_image(pixels.to(old.device)).float(), dim=-1).cpu().numpy()
    encoder = Encoder(towers, BatchLimits(64, 0, 1000), max_pixels=MAX_PIXELS)

    async def embed() -> np.ndarray:
        encoder.start()
        rows = await encoder.embed_images([(f"{i}.jpg", d) for i, d in enumerate(jpegs)])
        await encoder.stop()
        return rows

    ours = asyncio.run(embed())
    report.add("min cosine to open_clip fp32 on 7 photos", None, float(np.min(np.sum(ours * theirs, axis=1))), "")


def run(device_name: str, sizes: Sizes, preprocess_only: bool) -> Report:
    report = Report()
    device = torch.device(device_name)
    jpegs = photos(min(sizes.jpegs, 64))
    old = OldPath(device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    towers: ClipTowers | None = None
    try:
        towers = new_towers(device_name)
        print(f"{MODEL} random weights on {towers.info.device}{gpu}, new path precision {towers.info.precision}")
    except Exception as exc:  # the old path's figures are still worth having
        report.errors.append(f"loading the new towers: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        print(f"{MODEL} random weights on {device}{gpu}: the new path did not load; old path only")

    def compare(label: str, unit: str, measure_old: Callable[[], float], measure_new: Callable[[], float]) -> None:
        """One row; each side is measured on its own, so a failing new path still leaves the old figure."""
        figures: list[float | None] = []
        for side, measure in (("old", measure_old), ("new", measure_new)):
            try:
                figures.append(measure() if side == "old" or towers is not None else None)
            except Exception as exc:
                report.errors.append(f"{label} ({side}): {type(exc).__name__}: {exc}")
                traceback.print_exc()
                figures.append(None)
        report.add(label, figures[0], figures[1], unit)

    def new() -> ClipTowers:
        assert towers is not None  # compare() skips the new side when loading failed
        return towers

    def preprocess_rates(prepare: Callable[[bytes], object]) -> float:
        # Best of three: a shared machine's load drifts between runs.
        return max(preprocess_rate(prepare, jpegs, sizes.workers, sizes.jpegs // 4) for _ in range(3))

    compare(
        f"JPEG decode+preprocess img/s, {sizes.workers} threads",
        "img/s",
        lambda: preprocess_rates(old.prepare),
        lambda: preprocess_rates(lambda data: new().image.prepare(data, max_pixels=MAX_PIXELS)),
    )
    if preprocess_only:
        return report

    b = sizes.tower_batch

    def old_tower() -> float:
        floats = [old.prepare(jpegs[i % len(jpegs)]) for i in range(b)]
        return b / timed(lambda: old.encode_images(floats), sizes.tower_batches)

    def new_tower() -> float:
        raw = [new().image.prepare(jpegs[i % len(jpegs)], max_pixels=MAX_PIXELS) for i in range(b)]
        return b / timed(lambda: new().image.encode(raw), sizes.tower_batches)

    compare(f"image tower img/s, preprocessed batch {b}", "img/s", old_tower, new_tower)
    compare(
        f"images/s from 640x480 JPEG bytes, batch {b}",
        "img/s",
        lambda: old_images_per_second(old, jpegs, sizes.jpegs // 2, b, sizes.workers),
        lambda: new_images_per_second(new(), jpegs, sizes.jpegs, b, in_flight=16),
    )

    texts = queries(max(sizes.texts, sizes.text_batch), seed=1)
    counter = iter(range(10**9))  # a new query each call, as with the cache off

    def batch(n: int) -> list[str]:
        i = next(counter)
        return [f"{texts[(i * n + j) % len(texts)]} {i}" for j in range(n)]

    for n in (1, 8, 64):
        compare(
            f"text tower latency, batch {n}",
            "ms",
            lambda n=n: median_ms(lambda: old.encode_texts(batch(n)), sizes.text_calls),  # type: ignore[misc]
            lambda n=n: median_ms(lambda: new().text.encode(batch(n)), sizes.text_calls),  # type: ignore[misc]
        )
    graphs = getattr(towers.text, "graphs", None) if towers is not None else None
    if graphs is not None and graphs.failed is not None:
        report.errors.append(f"CUDA graphs: {graphs.failed}")
        print(f"  CUDA graphs were turned off: {graphs.failed}")
    elif graphs is not None:
        section(report, "eager text", lambda: eager_text(report, new(), batch, sizes.text_calls))
    if towers is not None and device.type == "cuda":
        section(report, "nvJPEG", lambda: device_decode_check(report, new(), jpegs))
    # old: open_clip's own tokenizer; new: the service's (models/tokenizer.py), same ids.
    reference, fast = open_clip.get_tokenizer(MODEL), fast_tokenizer(open_clip.get_tokenizer(MODEL))
    for n in (1, 64):
        report.add(
            f"tokenizer, {n} {'query' if n == 1 else 'queries'}",
            median_ms(lambda n=n: reference(batch(n)), sizes.text_calls),  # type: ignore[misc]
            median_ms(lambda n=n: fast(batch(n)), sizes.text_calls),  # type: ignore[misc]
            "ms",
        )

    def texts_per_second(encode: Callable[[list[str]], object]) -> float:
        tb = sizes.text_batch
        encode(texts[:tb])  # warm-up
        sync()
        started = time.perf_counter()
        for start in range(0, sizes.texts, tb):
            encode(texts[start : start + tb])
        sync()
        return sizes.texts / (time.perf_counter() - started)

    compare(
        f"texts/s, batch {sizes.text_batch}",
        "texts/s",
        lambda: texts_per_second(old.encode_texts),
        lambda: texts_per_second(new().text.encode),
    )
    if towers is not None:
        section(report, "thumbnails", lambda: thumbnails(report, new(), jpegs, sizes.thumbnails, device))
        section(report, "exactness", lambda: exactness(report, old, new()))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--workers", type=int, help="decode threads (default 16, smoke 2)")
    parser.add_argument("--jpegs", type=int, help="JPEGs per images/s figure")
    parser.add_argument("--preprocess-only", action="store_true", help="only the JPEG decode+preprocess figure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.workers or args.jpegs:
        sizes = Sizes(
            **{**sizes.__dict__, "workers": args.workers or sizes.workers, "jpegs": args.jpegs or sizes.jpegs}
        )
    report = run(args.device, sizes, args.preprocess_only)
    if args.json is not None:
        args.json.write_text(json.dumps({"figures": report.figures(), "errors": report.errors}, indent=1))
    if report.errors:
        print("errors:\n  " + "\n  ".join(report.errors))


if __name__ == "__main__":
    main()
