"""A typed Python client for the clipsearch service, sync and async (httpx)."""

from client.client import AsyncClient, Client, ClipsearchError

__all__ = ["AsyncClient", "Client", "ClipsearchError"]
