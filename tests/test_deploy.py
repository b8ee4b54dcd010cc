"""The deployment files are valid and say what the README promises."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML comes with transformers and huggingface_hub

from tests.prerequisites import require_or_skip

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "profile",
    [[], ["--profile", "gpu"], ["--profile", "monitoring"], ["--profile", "milvus"]],
    ids=["cpu", "gpu", "monitoring", "milvus"],
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
    if profile == ["--profile", "milvus"]:
        # The API waits for a healthy Milvus, which runs beside its etcd and object store.
        assert "milvusdb/milvus:v2.3.5" in result.stdout and "service_healthy" in result.stdout
        assert "ETCD_ENDPOINTS: milvus-etcd:2379" in result.stdout
        assert "MINIO_ADDRESS: milvus-minio:9000" in result.stdout
        assert "CLIPSEARCH_STORE__MILVUS_URI: http://milvus:19530" in result.stdout


def test_the_image_runs_as_a_non_root_user_with_a_health_check_and_a_data_volume():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER clipsearch" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/health" in dockerfile
    assert 'VOLUME ["/data"' in dockerfile


def copied_paths(dockerfile: str) -> list[str]:
    """The sources of every COPY line in the Dockerfile (the build context's paths it takes)."""
    paths = []
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            paths += [p for p in line.split()[1:-1] if not p.startswith("--")]
    return paths


def test_the_command_line_starts_from_exactly_what_the_image_copies(tmp_path):
    """Builds the package from only the Dockerfile's COPY sources and runs `clipsearch --help`
    with nothing else of the project importable: a package the entry point imports
    but the image leaves out fails here in seconds (0.1's image lacked client/)."""
    app = tmp_path / "app"
    app.mkdir()
    for path in copied_paths((ROOT / "Dockerfile").read_text()):
        source = ROOT / path
        (shutil.copytree if source.is_dir() else shutil.copy)(source, app / path)
    site = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(app),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    # -S: no .pth files, so the editable install of this checkout cannot stand in for a missing package.
    third_party = [p for p in sys.path if p.endswith("site-packages")]
    code = (
        f"import sys; sys.path[:0] = {[str(site), *third_party]!r}; sys.argv = ['clipsearch', '--help'];"
        "from clipsearch.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serve" in result.stdout


def test_every_service_built_from_source_builds_the_one_dockerfile():
    """clipsearch, clipsearch-gpu and clipsearch-milvus build the same Dockerfile from the same
    context (the GPU service only sets TORCH_INDEX), so the COPY test above and `make image-test`
    cover all three."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    declared = {line.split()[1].split("=")[0] for line in lines if line.startswith("ARG ")}
    builds = {name: service["build"] for name, service in compose["services"].items() if "build" in service}
    assert set(builds) == {"clipsearch", "clipsearch-gpu", "clipsearch-milvus"}
    for name, build in builds.items():
        spec = {"context": build} if isinstance(build, str) else build
        assert (ROOT / spec["context"]).resolve() == ROOT, name
        assert spec.get("dockerfile", "Dockerfile") == "Dockerfile", name
        assert set(spec.get("args", {})) <= declared, f"{name} sets a build argument the Dockerfile does not declare"


def test_no_other_installed_distribution_claims_the_top_level_names_clipsearch_installs():
    """clipsearch installs generic top-level packages (service, models, ...; docs/design.md says why).
    This fails when a dependency brings a module of one of those names, which would
    shadow ours or be shadowed, so the collision is met here and not in production."""
    import importlib.metadata
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    ours = {pattern.rstrip("*") for pattern in patterns["include"]}
    claimed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name is None or name.lower() == "clipsearch":
            continue
        for file in dist.files or []:
            top = file.parts[0].removesuffix(".py")
            if top in ours and not file.parts[0].endswith((".dist-info", ".data")):
                claimed[top] = name
    assert claimed == {}, f"installed distributions claim clipsearch's top-level names: {claimed}"
