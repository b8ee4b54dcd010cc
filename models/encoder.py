"""The async face of the CLIP towers: decoding in threads, batching across requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from cachetools import LRUCache

from models.batcher import BatchLimits, BatchObserver, MicroBatcher
from models.clip import ClipTowers, ImagePreparer, ModelInfo, zero_shot_probabilities
from models.images import decode_image, make_thumbnail, prepare_all


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float
    score: float  # cosine similarity of image and prompt


class Encoder:
    """Embeds images and texts with one micro-batcher per tower."""

    def __init__(
        self,
        towers: ClipTowers,
        limits: BatchLimits,
        *,
        max_pixels: int,
        text_cache_size: int = 0,
        observer: BatchObserver | None = None,
    ) -> None:
        self.towers = towers
        self._max_pixels = max_pixels
        # Queries repeat (popular searches, classify labels): their rows are kept.
        self._text_cache: LRUCache[str, np.ndarray] | None = LRUCache(text_cache_size) if text_cache_size else None
        self.images: MicroBatcher[torch.Tensor, np.ndarray] = MicroBatcher(
            lambda batch: list(towers.image.encode(batch)),
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_wait_s,
            max_queue=limits.max_queue,
            name="image",
            observer=observer,
        )
        self.texts: MicroBatcher[str, np.ndarray] = MicroBatcher(
            lambda batch: list(towers.text.encode(batch)),
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_wait_s,
            max_queue=limits.max_queue,
            name="text",
            observer=observer,
        )

    @property
    def info(self) -> ModelInfo:
        return self.towers.info

    def start(self) -> None:
        self.images.start()
        self.texts.start()

    async def stop(self) -> None:
        await asyncio.gather(self.images.stop(), self.texts.stop())

    async def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit rows, one per text; repeated texts come from an LRU cache."""
        cache = self._text_cache
        if cache is None:
            return np.stack(await self.texts.submit(texts))
        known = {text: row for text in texts if (row := cache.get(text)) is not None}
        missing = list(dict.fromkeys(text for text in texts if text not in known))
        if missing:
            for text, row in zip(missing, await self.texts.submit(missing), strict=True):
                row.flags.writeable = False  # shared between callers
                known[text] = cache[text] = row
        return np.stack([known[text] for text in texts])

    async def truncated(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text is longer than the model's context, so that only its start is embedded."""
        tower = self.towers.text
        if sum(len(text) for text in texts) <= 1000:
            needed = tower.tokens_needed(texts)  # short texts: microseconds, no thread hop
        else:
            needed = await asyncio.to_thread(tower.tokens_needed, texts)
        return [n > tower.context_length for n in needed]

    async def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the texts take in the model's context, all together."""
        return sum(await asyncio.to_thread(self.towers.text.count_tokens, texts))

    async def embed_images(self, images: Sequence[tuple[str, bytes]]) -> np.ndarray:
        """(n, dim) unit rows, one per (name, bytes) image.

        Raises:
            InvalidImageError: naming the first image that cannot be used.
        """
        vectors, _ = await self._embed(images, thumbnails=False)
        return vectors

    async def embed_images_with_thumbnails(self, images: Sequence[tuple[str, bytes]]) -> tuple[np.ndarray, list[bytes]]:
        """As embed_images, plus a JPEG thumbnail of each image, made from the same decode."""
        vectors, thumbnails = await self._embed(images, thumbnails=True)
        return vectors, thumbnails

    async def _embed(self, images: Sequence[tuple[str, bytes]], *, thumbnails: bool) -> tuple[np.ndarray, list[bytes]]:
        tower = self.towers.image
        if isinstance(tower, ImagePreparer):  # the CLIP tower: JPEGs decoded on the GPU, the rest at reduced scale
            pixels, thumbs = await tower.prepare_images(images, max_pixels=self._max_pixels, thumbnails=thumbnails)
            return np.stack(await self.images.submit(pixels)), thumbs

        def prepare(data: bytes) -> tuple[torch.Tensor, bytes]:
            image = decode_image(data, max_pixels=self._max_pixels)
            return self.towers.image.preprocess(image), make_thumbnail(image) if thumbnails else b""

        prepared = await prepare_all(images, prepare)
        vectors = np.stack(await self.images.submit([pixels for pixels, _ in prepared]))
        return vectors, [thumb for _, thumb in prepared]

    async def classify(self, image: tuple[str, bytes], labels: Sequence[str], template: str) -> list[LabelScore]:
        """Zero-shot classification of one image over `labels`, best first."""
        prompts = [template.replace("{}", label) for label in labels]
        image_row, label_rows = await asyncio.gather(self.embed_images([image]), self.embed_texts(prompts))
        scores = label_rows @ image_row[0]
        probabilities = zero_shot_probabilities(image_row[0], label_rows, self.towers.logit_scale)
        ranked = sorted(zip(labels, probabilities, scores, strict=True), key=lambda t: -t[1])
        return [LabelScore(label, float(p), float(s)) for label, p, s in ranked]
