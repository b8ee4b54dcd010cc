from __future__ import annotations

import pytest

from tests.prerequisites import require_or_skip


def test_a_missing_prerequisite_fails_the_test_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing prerequisite in CI: no widget"):
        require_or_skip("no widget")


def test_a_missing_prerequisite_skips_the_test_on_a_developers_machine(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no widget"):
        require_or_skip("no widget")
