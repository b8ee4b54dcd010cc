"""The `clipsearch` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError

from service.app import create_app
from service.settings import Settings

cli = typer.Typer(help="Zero-shot image–text retrieval with CLIP and FAISS.", no_args_is_help=True)


@cli.callback()
def _group() -> None:
    """Zero-shot image–text retrieval with CLIP and FAISS."""


def build_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    given: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        group, _, name = dotted.rpartition(".")
        target = given.setdefault(group, {}) if group else given
        target[name] = value
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="address to listen on [env CLIPSEARCH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [env CLIPSEARCH_PORT]")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="store directory [env CLIPSEARCH_STORE__DATA_DIR]")] = None,
    model: Annotated[
        str | None, typer.Option(help="open_clip model name or `demo` [env CLIPSEARCH_MODEL__NAME]")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="tag, hf-hub:id, checkpoint path or `none` [env CLIPSEARCH_MODEL__PRETRAINED]")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env CLIPSEARCH_MODEL__DEVICE]")] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option(help="largest forward pass; 1 turns batching off [env CLIPSEARCH_BATCHING__MAX_BATCH_SIZE]"),
    ] = None,
    max_batch_wait_ms: Annotated[
        float | None, typer.Option(help="wait for more items [env CLIPSEARCH_BATCHING__MAX_BATCH_WAIT_MS]")
    ] = None,
) -> None:
    """Run the HTTP service."""
    settings = build_settings(
        {
            "host": host,
            "port": port,
            "store.data_dir": data_dir,
            "model.name": model,
            "model.pretrained": pretrained,
            "model.device": device,
            "batching.max_batch_size": max_batch_size,
            "batching.max_batch_wait_ms": max_batch_wait_ms,
        }
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
