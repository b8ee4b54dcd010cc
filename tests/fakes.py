"""A deterministic fake CLIP: embeddings follow the mean colour of an image or
the colour word of a text, so API tests can assert ranks without a real model."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from models.blip import BlipInfo, BlipTask, CaptionJob, CaptionOptions, MatchJob
from models.clip import ClipTowers, ModelInfo
from models.images import decode_image

DIM = 8
COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
}


def colour_vector(rgb: Sequence[float]) -> np.ndarray:
    r, g, b = rgb
    v = np.array([r, g, b, 1 - r, 1 - g, 1 - b, 0.05, 0.05], dtype=np.float32)
    return v / np.linalg.norm(v)


class FakeImageTower:
    def __init__(self) -> None:
        self.fail_next = False

    def prepare(self, data: bytes, *, max_pixels: int) -> torch.Tensor:
        return self.preprocess(decode_image(data, max_pixels=max_pixels))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) / 255.0)

    def encode(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the fake image tower was told to fail")
        return np.stack([colour_vector(t.tolist()) for t in batch])


class FakeTextTower:
    def encode(self, batch: Sequence[str]) -> np.ndarray:
        return np.stack([self._one(text) for text in batch])

    context_length = 16  # words, start and end included; the rest is cut, as a real tokenizer does

    def count_tokens(self, batch: Sequence[str]) -> list[int]:
        return [min(n, self.context_length) for n in self.tokens_needed(batch)]

    def tokens_needed(self, batch: Sequence[str]) -> list[int]:
        return [len(text.split()) + 2 for text in batch]  # words plus start and end

    def _one(self, text: str) -> np.ndarray:
        words = text.lower().replace(".", " ").split()[: self.context_length - 2]  # what fits is embedded
        for word in words:
            if word in COLOURS:
                return colour_vector(COLOURS[word])
        seed = int.from_bytes(hashlib.sha256(" ".join(words).encode()).digest()[:4], "little")
        v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
        return v / np.linalg.norm(v)


def fake_towers() -> ClipTowers:
    return ClipTowers(
        image=FakeImageTower(),
        text=FakeTextTower(),
        info=ModelInfo(name="fake", pretrained="none", dim=DIM, device="cpu", precision="fp32"),
        logit_scale=100.0,
    )


def image_bytes(colour: str | tuple[int, int, int], *, size: tuple[int, int] = (16, 16), fmt: str = "PNG") -> bytes:
    rgb = tuple(int(c * 255) for c in COLOURS[colour]) if isinstance(colour, str) else colour
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def nearest_colour(pixels: torch.Tensor) -> str:
    """The name in COLOURS closest to a mean (r, g, b) in [0, 1]."""
    rgb = np.asarray(pixels.tolist())
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(COLOURS[name]) - rgb) ** 2)))


class FakeCaptionTower:
    """Captions an image "a <nearest colour> picture" (after the prompt, if any)."""

    max_positions = 40

    def __init__(self) -> None:
        self.info = BlipInfo(BlipTask.CAPTION, "fake-captioner", "fake-captioner", "cpu")
        self.batches: list[list[CaptionOptions]] = []

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return FakeImageTower().preprocess(image)

    def prompt_tokens(self, prompt: str) -> int:
        return len(prompt.split())

    def caption(self, jobs: Sequence[CaptionJob]) -> list[str]:
        self.batches.append([job.options for job in jobs])
        captions = []
        for job in jobs:
            words = f"a {nearest_colour(job.pixels)} picture".split()
            prompt = (job.options.prompt or "").split()
            captions.append(" ".join((prompt + words)[: len(prompt) + job.options.max_new_tokens]))
        return captions


class FakeMatchTower:
    """An ITM model that prefers darker images: probability = 1 - mean brightness."""

    def __init__(self) -> None:
        self.info = BlipInfo(BlipTask.ITM, "fake-itm", "fake-itm", "cpu")
        self.texts: list[str] = []

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return FakeImageTower().preprocess(image)

    def match(self, jobs: Sequence[MatchJob]) -> list[float]:
        self.texts += [job.text for job in jobs]
        return [1.0 - float(job.pixels.mean()) for job in jobs]
