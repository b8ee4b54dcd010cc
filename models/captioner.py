"""The async face of the BLIP towers: decoding in threads, batching across requests.

`Captioner` writes captions; `Matcher` scores image–text pairs with the ITM
head and reorders candidates by that score. Both queue their work on a
`MicroBatcher`, the same one the CLIP towers use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import torch
from PIL import Image

from models.batcher import BatchLimits, BatchObserver, MicroBatcher
from models.blip import BlipInfo, CaptionJob, CaptionOptions, MatchJob
from models.errors import InvalidImageError, InvalidOptionsError
from models.images import decode_image, prepare_all

log = logging.getLogger(__name__)

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


class CaptionTower(Protocol):
    """A captioning model (BlipCaptioner, or a fake in tests)."""

    info: BlipInfo

    @property
    def max_positions(self) -> int:
        """Longest token sequence (prompt plus caption) the decoder can read."""
        ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def prompt_tokens(self, prompt: str) -> int: ...

    def caption(self, jobs: Sequence[CaptionJob]) -> list[str]: ...


class MatchTower(Protocol):
    """An image–text matching model (BlipMatcher, or a fake in tests)."""

    info: BlipInfo

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def match(self, jobs: Sequence[MatchJob]) -> list[float]:
        """The probability that each job's image and text match."""
        ...


def _preparer(tower: CaptionTower | MatchTower, max_pixels: int) -> Callable[[bytes], torch.Tensor]:
    return lambda data: tower.preprocess(decode_image(data, max_pixels=max_pixels))


class _Batched(Generic[JobT, ResultT]):
    """A BLIP tower's jobs queued on one micro-batcher."""

    def __init__(
        self,
        run: Callable[[Sequence[JobT]], Sequence[ResultT]],
        *,
        name: str,
        info: BlipInfo,
        limits: BatchLimits,
        max_pixels: int,
        observer: BatchObserver | None,
    ) -> None:
        self.info = info
        self._max_pixels = max_pixels
        self.batcher: MicroBatcher[JobT, ResultT] = MicroBatcher(
            run,
            max_batch_size=limits.max_batch_size,
            max_wait_s=limits.max_wait_s,
            max_queue=limits.max_queue,
            name=name,
            observer=observer,
        )

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()


class Captioner(_Batched[CaptionJob, str]):
    """Captions images; requests with equal options share forward passes."""

    def __init__(
        self, tower: CaptionTower, limits: BatchLimits, *, max_pixels: int, observer: BatchObserver | None = None
    ) -> None:
        super().__init__(
            tower.caption, name="caption", info=tower.info, limits=limits, max_pixels=max_pixels, observer=observer
        )
        self.tower = tower

    def check(self, options: CaptionOptions) -> None:
        """Raise InvalidOptionsError when the prompt and the new tokens do not fit the decoder."""
        prompt = self.tower.prompt_tokens(options.prompt) if options.prompt else 0
        needed = 1 + prompt + options.max_new_tokens  # the start token, the prompt, the caption
        if needed > self.tower.max_positions:
            raise InvalidOptionsError(
                f"the prompt ({prompt} tokens) and max_new_tokens ({options.max_new_tokens}) need {needed} "
                f"positions; this captioner reads at most {self.tower.max_positions}"
            )

    async def caption(self, images: Sequence[tuple[str, bytes]], options: CaptionOptions) -> list[str]:
        """One caption per (name, bytes) image.

        Raises:
            InvalidImageError: naming the first image that cannot be used.
            InvalidOptionsError: the options do not fit the model.
        """
        self.check(options)
        pixels = await prepare_all(images, _preparer(self.tower, self._max_pixels))
        return await self.batcher.submit([CaptionJob(p, options) for p in pixels])


class Matcher(_Batched[MatchJob, float]):
    """Scores (image, text) pairs with an ITM head, batched across requests."""

    def __init__(
        self, tower: MatchTower, limits: BatchLimits, *, max_pixels: int, observer: BatchObserver | None = None
    ) -> None:
        super().__init__(
            tower.match, name="itm", info=tower.info, limits=limits, max_pixels=max_pixels, observer=observer
        )
        self.tower = tower

    async def rank(self, text: str, images: Sequence[bytes | None]) -> list[tuple[int, float | None]]:
        """Candidates reordered by ITM probability: (position in `images`, probability), best first.

        Candidates without an image (None), or whose stored image no longer
        decodes, cannot be scored: they follow the scored ones in their given order.
        """

        def prepare(data: bytes) -> torch.Tensor | None:
            try:
                return self.tower.preprocess(decode_image(data, max_pixels=self._max_pixels))
            except InvalidImageError as exc:
                log.warning("a stored image cannot be reranked: %s", exc)
                return None

        prepared = await asyncio.gather(*(asyncio.to_thread(prepare, data) for data in images if data is not None))
        pixels = iter(prepared)
        usable: list[tuple[int, torch.Tensor]] = []
        for i, data in enumerate(images):
            if data is not None and (p := next(pixels)) is not None:
                usable.append((i, p))
        scores = await self.batcher.submit([MatchJob(p, text) for _, p in usable])
        scored = sorted(((i, score) for (i, _), score in zip(usable, scores, strict=True)), key=lambda pair: -pair[1])
        done = {i for i, _ in scored}
        return [*scored, *((i, None) for i in range(len(images)) if i not in done)]
