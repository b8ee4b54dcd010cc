"""Reaching the Hugging Face hub, where open_clip fetches pretrained weights.

Without a network, huggingface_hub retries every file five times with backoff
and logs each try twice: about fifty lines and most of a minute before the
download fails. One quick connection first says whether the hub can be
reached at all; when it cannot, the weights are looked up in the local cache
only (the hub's own offline mode), which answers at once either way.
"""

from __future__ import annotations

import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from huggingface_hub import constants

PROBE_TIMEOUT_S = 3.0

_offline_lock = threading.Lock()


def cache_dir() -> str:
    """Where huggingface_hub keeps downloaded files (HF_HUB_CACHE, or HF_HOME/hub)."""
    return str(constants.HF_HUB_CACHE)


def unreachable_reason(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be reached, or None when a connection to it (or to the proxy for it) opens in time."""
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    hub = endpoint.hostname or ""
    # Behind a proxy the hub is reached through it, so the proxy is what must answer.
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    via = urllib.parse.urlsplit(proxy) if proxy and not urllib.request.proxy_bypass(hub) else endpoint
    port = via.port or (443 if via.scheme == "https" else 80)
    try:
        with socket.create_connection((via.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        through = f" through the proxy {via.hostname}" if via is not endpoint else ""
        return f"{hub} cannot be reached{through} ({exc})"


@contextmanager
def offline() -> Iterator[None]:
    """huggingface_hub reads only its local cache meanwhile: its own HF_HUB_OFFLINE switch, read on every call.

    The switch is process-wide: anything else fetching from the hub at the same
    time is offline too (the service loads its models one after the other).
    """
    with _offline_lock:
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved
