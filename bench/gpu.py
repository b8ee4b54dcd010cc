"""End-to-end GPU throughput: images/s from JPEG bytes and text queries/s (benchmark 5).

    python -m bench.gpu                       # on a CUDA machine, under 5 minutes
    python -m bench.gpu --device cpu --images 16 --texts 64 --batches 8   # smoke run

ViT-B-32 with random weights through the service's own towers (fp16 autocast,
pinned memory, the trimmed text path). Images: 640x480 JPEG bytes decoded and
preprocessed by a thread pool while the GPU encodes the previous batch. Each
figure is the best over the batch sizes tried.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.common import photos, queries
from models.clip import ClipTowers, load_clip

MODEL = "ViT-B-32"


def images_per_second(towers: ClipTowers, jpegs: list[bytes], count: int, batch: int, workers: int) -> float:
    items = [jpegs[i % len(jpegs)] for i in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        # map() keeps decoding ahead of the batch being encoded.
        decoded = pool.map(lambda data: towers.image.prepare(data, max_pixels=50_000_000), items)
        pending = []
        for pixels in decoded:
            pending.append(pixels)
            if len(pending) == batch:
                towers.image.encode(pending)
                pending = []
        if pending:
            towers.image.encode(pending)
        _sync()
    return count / (time.perf_counter() - started)


def texts_per_second(towers: ClipTowers, texts: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        towers.text.encode(texts[start : start + batch])
    _sync()
    return len(texts) / (time.perf_counter() - started)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--texts", type=int, default=65536)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    towers = load_clip(MODEL, "none", args.device, fallback_to_demo=False)
    jpegs = photos(min(args.images, 256))
    texts = queries(args.texts, seed=1)
    print(
        f"{MODEL} random weights on {towers.info.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else "")
    )
    images_per_second(towers, jpegs, min(args.images, 256), args.batches[0], args.workers)  # warm-up
    texts_per_second(towers, texts[:2048], args.batches[0])
    best_images = max((images_per_second(towers, jpegs, args.images, b, args.workers), b) for b in args.batches)
    best_texts = max((texts_per_second(towers, texts, b), b) for b in args.batches)
    print(f"  images/s from 640x480 JPEG bytes: {best_images[0]:9.0f}  (batch {best_images[1]}, target 3,000 on H100)")
    print(f"  text queries/s:                   {best_texts[0]:9.0f}  (batch {best_texts[1]}, target 10,000 on H100)")


if __name__ == "__main__":
    main()
