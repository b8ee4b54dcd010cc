from __future__ import annotations

import pytest

from bench.load import run_load

pytestmark = pytest.mark.e2e


def test_a_short_mixed_load_gets_no_server_error_and_loses_no_write(tmp_path):
    report = run_load(tmp_path / "data", seconds=8, clients=8)
    assert report.server_errors == 0, report.statuses
    assert report.lost_writes == 0
    assert report.requests > 100 and report.added
