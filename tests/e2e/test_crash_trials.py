from __future__ import annotations

import pytest

from bench.crash_trials import run_trials

pytestmark = pytest.mark.e2e


def test_kill_9_under_concurrent_writes_loses_no_acknowledged_add_or_delete(tmp_path):
    report = run_trials(tmp_path / "data", trials=3, seed=1)
    assert report.failures == []
    assert report.acknowledged_writes > 0 and report.checked_present > 0
