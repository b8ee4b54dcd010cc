"""Domain errors raised by index/. service/errors.py maps each to an HTTP status."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error raised by index/."""


class ItemNotFoundError(StoreError):
    """No item has the given id."""

    def __init__(self, item_id: str, what: str = "item") -> None:
        super().__init__(f"no {what} with id {item_id!r}" if what == "item" else f"item {item_id!r} has no {what}")
        self.item_id = item_id


class InvalidItemError(StoreError):
    """An id, vector, metadata value or filter is not acceptable; the message says which."""


class IncompatibleStoreError(StoreError):
    """The data directory was written for vectors of another dimension or model."""


class StorageUnavailableError(StoreError):
    """The data directory cannot be written (full disk, read-only, I/O error); nothing was stored."""


class StoreUnreachableError(StoreError):
    """The vector database did not answer (down, restarting, timed out): retry later.

    A write that fails this way may or may not have been stored; writes by id
    are idempotent, so the caller retries it.
    """
