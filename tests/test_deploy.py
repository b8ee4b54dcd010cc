"""The deployment files are valid and say what the README promises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prerequisites import require_or_skip

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "profile", [[], ["--profile", "gpu"], ["--profile", "monitoring"]], ids=["cpu", "gpu", "monitoring"]
)
def test_docker_compose_validates_the_compose_file(profile):
    if shutil.which("docker-compose") is None:
        require_or_skip("docker-compose is not installed (.ci/run installs it)")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", *profile, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "clipsearch-data" in result.stdout
    if profile == ["--profile", "gpu"]:
        assert "capabilities" in result.stdout and "cuda" in result.stdout
    if profile == ["--profile", "monitoring"]:
        assert "prometheus.yml" in result.stdout


def test_the_image_runs_as_a_non_root_user_with_a_health_check_and_a_data_volume():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER clipsearch" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'VOLUME ["/data"' in dockerfile
