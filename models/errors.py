"""Domain errors raised by models/. service/errors.py maps each to an HTTP status."""

from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by models/."""


class InvalidImageError(ModelError):
    """The bytes given as an image cannot be decoded, or the image is unusable."""


class ModelLoadError(ModelError):
    """A model could not be loaded; the message says which and why."""


class OverloadedError(ModelError):
    """The inference queue is full; the caller should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ShuttingDownError(ModelError):
    """The batcher is stopping and takes no new work."""


class InvalidOptionsError(ModelError):
    """Options a model cannot honour (a prompt too long for its context, ...)."""
