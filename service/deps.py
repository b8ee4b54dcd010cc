"""Objects built in the app's lifespan, handed to routes through Depends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from index.types import VectorStore
from models.encoder import Encoder
from service.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    encoder: Encoder
    store: VectorStore
    api_keys: tuple[str, ...] = ()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


def get_encoder(request: Request) -> Encoder:
    return get_runtime(request).encoder


def get_store(request: Request) -> VectorStore:
    return get_runtime(request).store


SettingsDep = Annotated[Settings, Depends(get_settings)]
EncoderDep = Annotated[Encoder, Depends(get_encoder)]
StoreDep = Annotated[VectorStore, Depends(get_store)]
