"""The one way images get into the store, for the HTTP route and the local indexer alike.

Each image is decoded once for its embedding and its thumbnail, optionally
captioned (the caption written into its metadata), its caption embedded as
text, its original kept where configured, and everything written in one
durable upsert. A second path would drift: 0.1's local indexer stored no
thumbnail, so its items showed broken images on the page and could not be
reranked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np

from index.types import Item, NewItem, VectorStore
from models.blip import CaptionOptions
from models.captioner import Captioner
from models.encoder import Encoder


async def ingest_images(
    encoder: Encoder,
    store: VectorStore,
    uploads: Sequence[tuple[str, bytes]],
    *,
    ids: Sequence[str] | None,
    metadata: Sequence[dict[str, Any]],
    keep_originals: bool,
    captioner: Captioner | None = None,
) -> list[Item]:
    """Embed, thumbnail, (caption,) and store `uploads`, one (name, bytes) per item; durable when it returns.

    `ids` None: the store generates ids. With a captioner, each item's
    metadata gains a `caption` (callers refuse metadata that has one already).
    Any string `caption` in the metadata is embedded too, so text search can
    match it.

    Raises:
        InvalidImageError: naming the first file that cannot be used; nothing is stored.
        InvalidItemError: an id or metadata the store refuses; nothing is stored.
    """
    metas = [dict(meta) for meta in metadata]
    if captioner is not None:
        # Both models work at once: CLIP on its batcher, BLIP on its own.
        (vectors, thumbnails), captions = await asyncio.gather(
            encoder.embed_images_with_thumbnails(uploads), captioner.caption(uploads, CaptionOptions())
        )
        metas = [{**meta, "caption": text} for meta, text in zip(metas, captions, strict=True)]
    else:
        vectors, thumbnails = await encoder.embed_images_with_thumbnails(uploads)
    caption_vectors = await _caption_vectors(encoder, metas)
    items = [
        NewItem(
            vector=vector,
            id=ids[i] if ids is not None else None,
            metadata=metas[i],
            thumbnail=thumbnails[i],
            original=uploads[i][1] if keep_originals else None,
            caption_vector=caption_vectors[i],
        )
        for i, vector in enumerate(vectors)
    ]
    # SQLite commits with fsync: blocking I/O, so off the event loop.
    return await asyncio.to_thread(store.upsert, items)


async def _caption_vectors(encoder: Encoder, metas: list[dict[str, Any]]) -> list[np.ndarray | None]:
    """The text embedding of each item's metadata `caption` (None where it has no caption text)."""
    texts = [
        meta["caption"] if isinstance(meta.get("caption"), str) and meta["caption"].strip() else None for meta in metas
    ]
    present = [text for text in texts if text is not None]
    if not present:
        return [None] * len(metas)
    rows = iter(await encoder.embed_texts(present))
    return [next(rows) if text is not None else None for text in texts]
