from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from models.batcher import BatchLimits
from models.encoder import Encoder
from models.errors import InvalidImageError
from tests.fakes import FakeTextTower, fake_towers, image_bytes


class CountingTextTower(FakeTextTower):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, batch):
        self.seen += list(batch)
        return super().encode(batch)


def make_encoder(text_cache_size: int = 0, text_tower=None) -> Encoder:
    towers = fake_towers()
    if text_tower is not None:
        towers = replace(towers, text=text_tower)
    return Encoder(towers, BatchLimits(max_batch_size=8, max_wait_s=0, max_queue=64), max_pixels=10**6,
                   text_cache_size=text_cache_size)  # fmt: skip


def test_repeated_texts_are_encoded_once_with_the_cache_on():
    tower = CountingTextTower()

    async def scenario():
        encoder = make_encoder(text_cache_size=16, text_tower=tower)
        encoder.start()
        first = await encoder.embed_texts(["red", "blue", "red"])
        second = await encoder.embed_texts(["blue", "green"])
        await encoder.stop()
        return first, second

    first, second = asyncio.run(scenario())
    assert tower.seen == ["red", "blue", "green"]
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_array_equal(second, FakeTextTower().encode(["blue", "green"]))


def test_without_the_cache_every_text_reaches_the_tower():
    tower = CountingTextTower()

    async def scenario():
        encoder = make_encoder(text_tower=tower)
        encoder.start()
        await encoder.embed_texts(["red"])
        await encoder.embed_texts(["red"])
        await encoder.stop()

    asyncio.run(scenario())
    assert tower.seen == ["red", "red"]


def test_a_bad_image_is_named_in_the_error():
    async def scenario():
        encoder = make_encoder()
        encoder.start()
        try:
            await encoder.embed_images([("ok.png", image_bytes("red")), ("broken.png", b"\x89PNG junk")])
        finally:
            await encoder.stop()

    with pytest.raises(InvalidImageError, match=r"^broken\.png: "):
        asyncio.run(scenario())
