"""Tests that need something from the machine: skip on a developer's machine, fail in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (`CI=true`, as .ci/run's caller sets it)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_or_skip(reason: str) -> NoReturn:
    """Stop the test because a prerequisite is missing: a failure in CI, a skip elsewhere.

    CI installs every prerequisite (.ci/run), so one missing there means a test
    that would have proved something did not run; a developer may lack one.
    """
    if in_ci():
        pytest.fail(f"missing prerequisite in CI: {reason}", pytrace=False)
    pytest.skip(reason)
