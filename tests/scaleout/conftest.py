from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A one-machine Ray for the session (~10 s to start here), shut down at the end.

    2 CPUs, loopback only, no dashboard, no token auth (2.60 turns it on and
    writes ~/.ray/auth_token); the commands under test find it already running.
    """
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    from scaleout.ray_embed import local_ray_init_options

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(**local_ray_init_options(num_cpus=2))
    try:
        yield
    finally:
        ray.shutdown()
