"""clipsearch's HTTP API on Ray Serve: API replicas in front of image and text tower replicas, Milvus behind.

    clients -> Api (the FastAPI app of service.app.create_app, N replicas)
                 -> ImageTower replicas (@serve.batch forward passes; GPUs per replica configurable)
                 -> TextTower replicas  (the same)
                 -> Milvus (every API replica opens the same collection)

The API replicas keep everything but the forward passes: decoding, thumbnails,
tokenising, the micro-batchers, the store. Their towers are RemoteImageTower
and RemoteTextTower: the service's own towers (loaded on the CPU, for their
preprocessing and tokenizer) whose `encode` sends each micro-batch to the
tower deployments as one call, and Serve batches the calls of every API
replica into one forward pass. Routes, errors,
/health and /ready are the service's, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from service.settings import ModelSettings, Settings

if TYPE_CHECKING:
    import torch
    from fastapi import FastAPI
    from PIL import Image
    from ray.serve import Application

    from models.clip import ClipImageTower, ClipTextTower, ClipTowers

APP_NAME = "clipsearch"
T = TypeVar("T")


@dataclass(frozen=True)
class Replicas:
    """How many of each deployment, and what each tower replica takes."""

    towers: int = 1
    api: int = 1
    gpus_per_tower: float = 0.0
    cpus_per_tower: float = 0.5  # a fraction: on a 2-core machine whole cores would leave none for the API
    # A call is one API replica's micro-batch (up to batching.max_batch_size items); a tower
    # replica merges up to this many calls, from any API replicas, into one forward pass.
    calls_per_batch: int = 4


def _load(model: ModelSettings, device: str | None = None) -> ClipTowers:
    from models.clip import load_clip

    return load_clip(
        model.name,
        model.pretrained,
        device or model.device,
        fallback_to_demo=model.fallback_to_demo,
        precision=model.precision,
        pipeline=model.pipeline,
    )


def _batching(method: Any, calls_per_batch: int, batch_wait_s: float) -> None:
    """The configured batching on a @serve.batch method (the decorator's are only defaults)."""
    method.set_max_batch_size(calls_per_batch)
    method.set_batch_wait_timeout_s(batch_wait_s)


@serve.deployment
class ImageTower:
    """The image encoder's forward passes, batched across every API replica's calls."""

    def __init__(self, model: ModelSettings, calls_per_batch: int, batch_wait_s: float) -> None:
        self._towers = _load(model)
        _batching(self.encode, calls_per_batch, batch_wait_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def encode(self, calls: list[list[torch.Tensor]]) -> list[np.ndarray]:
        # A forward pass is CPU or GPU work that blocks: in a thread, so the replica takes the next calls meanwhile.
        return _split(await asyncio.to_thread(self._towers.image.encode, _flat(calls)), calls)


@serve.deployment
class TextTower:
    """The text encoder's forward passes, batched across every API replica's calls."""

    def __init__(self, model: ModelSettings, calls_per_batch: int, batch_wait_s: float) -> None:
        self._towers = _load(model)
        _batching(self.encode, calls_per_batch, batch_wait_s)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.002)
    async def encode(self, calls: list[list[str]]) -> list[np.ndarray]:
        return _split(await asyncio.to_thread(self._towers.text.encode, _flat(calls)), calls)


def _flat(calls: list[list[T]]) -> list[T]:
    return [item for call in calls for item in call]


def _split(rows: np.ndarray, calls: Sequence[Sequence[Any]]) -> list[np.ndarray]:
    """Each call's rows of one forward pass over all of them, in order."""
    bounds = np.cumsum([len(call) for call in calls])[:-1]
    return np.split(rows, bounds)


def _gather(handle: DeploymentHandle[Any], items: Sequence[Any]) -> np.ndarray:
    """The rows of one micro-batch, as one call (Serve batches the calls of every API replica).

    Runs in the micro-batcher's thread, where waiting is allowed. A call whose
    replica died under it (killed, its node lost) is sent again once: Serve
    routes it to a live replica while the controller replaces the dead one.
    """
    from ray.exceptions import RayActorError

    try:
        return np.asarray(handle.encode.remote(list(items)).result())
    except RayActorError:
        return np.asarray(handle.encode.remote(list(items)).result())


class RemoteImageTower:
    """The service's image tower with its forward pass on the ImageTower deployment."""

    def __init__(self, local: ClipImageTower, handle: DeploymentHandle[Any]) -> None:
        self._local, self._handle = local, handle

    def prepare(self, data: bytes, *, max_pixels: int) -> torch.Tensor:
        return self._local.prepare(data, max_pixels=max_pixels)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self._local.preprocess(image)

    async def prepare_images(
        self, images: Sequence[tuple[str, bytes]], *, max_pixels: int, thumbnails: bool
    ) -> tuple[list[torch.Tensor], list[bytes]]:
        return await self._local.prepare_images(images, max_pixels=max_pixels, thumbnails=thumbnails)

    def encode(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        return _gather(self._handle, batch)


class RemoteTextTower:
    """The service's text tower (its tokenizer answers locally) with its forward pass on TextTower."""

    def __init__(self, local: ClipTextTower, handle: DeploymentHandle[Any]) -> None:
        self._local, self._handle = local, handle

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        return _gather(self._handle, batch)

    def count_tokens(self, batch: Sequence[str]) -> list[int]:
        return self._local.count_tokens(batch)

    @property
    def context_length(self) -> int:
        return self._local.context_length

    def tokens_needed(self, batch: Sequence[str]) -> list[int]:
        return self._local.tokens_needed(batch)


@serve.deployment
@serve.ingress()
class Api:
    """An API replica: service.app's FastAPI app on remote towers and the configured (Milvus) store."""

    def __init__(self, settings: Settings, image: DeploymentHandle[Any], text: DeploymentHandle[Any]) -> None:
        from models.clip import ClipImageTower, ClipTextTower, ClipTowers

        # The towers on the CPU for their preprocessing and tokenizer; forward passes go to the deployments.
        local = _load(settings.model, device="cpu")
        assert isinstance(local.image, ClipImageTower) and isinstance(local.text, ClipTextTower)
        self._settings = settings
        self._towers = ClipTowers(
            image=RemoteImageTower(local.image, image),
            text=RemoteTextTower(local.text, text),
            info=replace(local.info, device="ray-serve"),
            logit_scale=local.logit_scale,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        from service.app import create_app

        return create_app(self._settings, towers=self._towers)


def build(settings: Settings, replicas: Replicas) -> Application:
    """The Serve application: `serve.run(build(...), name=APP_NAME, route_prefix="/")`."""
    b = settings.batching
    tower_options: dict[str, Any] = {
        "num_replicas": replicas.towers,
        # Serve holds a replica's calls beyond max_ongoing_requests elsewhere: below the batch size, no batch fills.
        "max_ongoing_requests": 2 * replicas.calls_per_batch,
        "ray_actor_options": {"num_cpus": replicas.cpus_per_tower, "num_gpus": replicas.gpus_per_tower},
    }
    wait = b.max_batch_wait_ms / 1000
    image = ImageTower.options(**tower_options).bind(settings.model, replicas.calls_per_batch, wait)  # type: ignore[attr-defined]
    text = TextTower.options(**tower_options).bind(settings.model, replicas.calls_per_batch, wait)  # type: ignore[attr-defined]
    api = Api.options(  # type: ignore[attr-defined]
        num_replicas=replicas.api,
        # The app has its own bounded queues and answers 429 when full; Serve's default of 5 would cap it first.
        max_ongoing_requests=max(b.max_queue, 64),
        ray_actor_options={"num_cpus": 0.25},
    )
    return api.bind(settings, image, text)  # type: ignore[no-any-return]


def start(settings: Settings, replicas: Replicas, *, address: str | None = None) -> None:
    """Connect to (or start) Ray, start Serve's proxy on settings.host:settings.port, and deploy the app."""
    from scaleout.ray_embed import connect

    connect(address)
    # Explicit, so Serve never falls back to its own default port 8000 (this service's port) unasked.
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build(settings, replicas), name=APP_NAME, route_prefix="/")


def from_args(args: dict[str, str]) -> Application:
    """A `serve run` / RayService target: `scaleout.serve_app:from_args`, settings from CLIPSEARCH_ variables.

    `args` (Serve's application arguments): replicas, api_replicas, gpus_per_replica, cpus_per_replica.
    """
    replicas = Replicas(
        towers=int(args.get("replicas", 1)),
        api=int(args.get("api_replicas", 1)),
        gpus_per_tower=float(args.get("gpus_per_replica", 0)),
        cpus_per_tower=float(args.get("cpus_per_replica", 0.5)),
    )
    return build(Settings(), replicas)
