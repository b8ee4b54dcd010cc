"""Ingestion throughput from JPEG bytes over HTTP vs a naive open_clip loop (benchmark 4).

    python -m bench.ingest [--images 96] [--batch 16] [--clients 2]

640x480 JPEG photos of generated scenes. The service (ViT-B-32, random weights;
precision auto, i.e. bf16 on CPUs with native bf16, and again fp32) takes them
over HTTP in multipart batches from a few clients: decoding runs in
worker threads beside the model and items are batched across requests. The
baseline, in the same run and in-process with no HTTP, decodes, preprocesses
and encodes one image at a time with open_clip's public API.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from bench.common import drive, photos
from harness.server import ServerProcess

MODEL = "ViT-B-32"


def service_rate(data_dir: Path, jpegs: list[bytes], batch: int, clients: int, *extra: str) -> float:
    batches = [jpegs[i : i + batch] for i in range(0, len(jpegs), batch)]

    def send(client, i):
        files = [("files", (f"{i}-{j}.jpg", data, "image/jpeg")) for j, data in enumerate(batches[i])]
        return client.post("/v1/images", files=files)

    with ServerProcess(data_dir, "--model", MODEL, "--pretrained", "none", *extra) as server:
        asyncio.run(drive(server.url, send, 1, 1))  # warm-up
        seconds, _ = asyncio.run(drive(server.url, send, len(batches), clients))
    return len(jpegs) / seconds


def naive_rate(jpegs: list[bytes]) -> float:
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL)
    model.eval()
    with torch.inference_mode():
        model.encode_image(preprocess(Image.open(io.BytesIO(jpegs[0])).convert("RGB")).unsqueeze(0))
        started = time.perf_counter()
        for data in jpegs:
            image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
            F.normalize(model.encode_image(preprocess(image).unsqueeze(0)), dim=-1)
    return len(jpegs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--clients", type=int, default=2)
    args = parser.parse_args()
    jpegs = photos(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        service = service_rate(Path(tmp) / "auto", jpegs, args.batch, args.clients)
        fp32 = service_rate(Path(tmp) / "fp32", jpegs, args.batch, args.clients, "--precision", "fp32")
    naive = naive_rate(jpegs)
    print(f"ingestion of {args.images} 640x480 JPEGs, {MODEL} random weights")
    print(
        f"  service over HTTP, batches of {args.batch}, {args.clients} clients, precision auto  {service:7.1f} images/s"
    )
    print(f"  the same with --precision fp32                                {fp32:7.1f} images/s")
    print(f"  naive sequential open_clip fp32 loop (no HTTP)                {naive:7.1f} images/s")
    print(f"  ratio: {service / naive:.2f}x (target >= 1.5x); fp32 service vs naive: {fp32 / naive:.2f}x")


if __name__ == "__main__":
    main()
