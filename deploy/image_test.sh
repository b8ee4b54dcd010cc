#!/usr/bin/env bash
# make image-test: build the image we ship, from the unchanged Dockerfile, with
# podman (no Docker engine needed), run it the way docker-compose does, and
# check it serves: /health, two uploads, a text search that ranks the right
# image first, and the image's own HEALTHCHECK. A file list that is only
# validated is not tested: 0.1's image lacked client/ and died at start.
#
# Runs offline except for the package registries:
# - no container registry is reachable from our machines, so where
#   `FROM python:3.11-slim` cannot be pulled, a stand-in is built from Debian
#   bookworm (whose python3 is 3.11) with debootstrap and imported under that name;
# - pip inside the build reads only a wheelhouse fetched on the host by the
#   host's own pip configuration (proxies, CA bundle, local indexes), mounted
#   read-only: mounting the host's pip configuration itself proved fragile (it
#   names a constraints file, local folders and a CA bundle that must follow).
# The stand-in base, the wheelhouse and the image's layers are kept between
# runs (the cache folder below and podman's storage): a warm run skips
# debootstrap, the download and the torch layer. `make image-clean` drops them.
#
# It needs podman, curl and a host python3 with pip, not the project's .venv:
# .ci/run runs it before `make install`, while the disk is emptiest.
#
# Settings (environment):
#   PYTHON              host Python with pip (python3): fetches the wheelhouse with the
#                       host's pip configuration, draws the test pictures, reads JSON
#   IMAGE_TEST_CACHE    cache folder (/var/cache/clipsearch-image as root, else ~/.cache/clipsearch-image)
#   IMAGE_TEST_TAG      tag of the image built (localhost/clipsearch:test)
#   CI=true             a missing prerequisite fails the run instead of skipping it
# `deploy/image_test.sh clean` (make image-clean) removes the image, the stand-in and the cache.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE_TEST_TAG:-localhost/clipsearch:test}
if [ "$(id -u)" = 0 ]; then
    CACHE=${IMAGE_TEST_CACHE:-/var/cache/clipsearch-image}
else
    CACHE=${IMAGE_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clipsearch-image}
fi
PYTHON=${PYTHON:-python3}
# The base image the Dockerfile names, and the packages a python:3.11-slim
# stand-in needs for the Dockerfile's steps (useradd is in minbase already).
BASE=$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' Dockerfile | head -n 1)
STANDIN_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
# torch and torchvision as the Dockerfile pins them, and the index it takes them from.
TORCH_PINS=$(grep -oE '\btorch(vision)?==[^[:space:]]+' Dockerfile | sort -u | paste -sd ' ')
TORCH_INDEX_DEFAULT=$(sed -n 's/^ARG TORCH_INDEX=//p' Dockerfile)
CONTAINER=clipsearch-image-test-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/clipsearch-image-test.XXXXXX")

# --- reporting ----------------------------------------------------------------
TIMINGS=()
PHASE=
PHASE_START=$SECONDS
phase() {
    if [ -n "$PHASE" ]; then TIMINGS+=("$(printf '%-28s %5d s' "$PHASE" $((SECONDS - PHASE_START)))"); fi
    PHASE=$1
    PHASE_START=$SECONDS
    [ -z "$PHASE" ] || echo "== $PHASE"
}
die() {
    echo "image-test: error: $*" >&2
    exit 1
}

cleanup() {
    status=$?
    phase ""
    if podman container exists "$CONTAINER" 2>/dev/null; then
        if [ "$status" != 0 ]; then
            echo "--- container log (last 60 lines)" >&2
            podman logs --tail 60 "$CONTAINER" >&2 || true
        fi
        # -v: the anonymous volumes of VOLUME /data and /cache go too.
        podman rm -f -v --time 5 "$CONTAINER" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    if [ "${#TIMINGS[@]}" -gt 0 ]; then
        echo "== timings"
        printf '   %s\n' "${TIMINGS[@]}"
        printf '   %-28s %5d s\n' total "$SECONDS"
    fi
    if [ "$status" != 0 ]; then echo "image-test: FAILED (exit $status)" >&2; fi
    exit "$status"
}
trap cleanup EXIT

# --- make image-clean -----------------------------------------------------------
if [ "${1:-}" = clean ]; then
    podman rmi -f "$IMAGE" 2>/dev/null || true
    if podman image exists "localhost/$BASE" 2>/dev/null; then podman rmi -f "localhost/$BASE" || true; fi
    rm -rf "$CACHE"
    echo "removed $IMAGE, the stand-in localhost/$BASE and $CACHE"
    exit 0
fi

# --- prerequisites --------------------------------------------------------------
# Named one by one; in CI a test that cannot run proves nothing, so it fails
# (as .ci/run does for chromium and wrk), elsewhere it is skipped out loud.
missing=()
command -v podman >/dev/null 2>&1 || missing+=("podman (apt-get install podman)")
command -v curl >/dev/null 2>&1 || missing+=("curl (apt-get install curl)")
"$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=("$PYTHON with pip (apt-get install python3-pip)")
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${CI:-}" = true ]; then die "missing: ${missing[*]}"; fi
    echo "image-test: SKIPPED, missing: ${missing[*]} (with CI=true this fails)" >&2
    exit 0
fi
[ -n "$BASE" ] || die "no FROM line in Dockerfile"
[ -n "$TORCH_PINS" ] || die "no torch==... pin in Dockerfile"
mkdir -p "$CACHE"

# podman run asks for more open files than our hard limit allows and then fails
# with "error setting rlimit": every container gets limits at or below it.
limit() {
    local hard
    hard=$(ulimit -H "$1")
    if [ "$hard" = unlimited ] || [ "$hard" -gt "$2" ]; then echo "$2"; else echo "$hard"; fi
}
nofile=$(limit -n 65536)
nproc=$(limit -u 16384)
LIMITS=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

free_gb() { df -Pk "$1" | awk 'NR == 2 { print int($4 / 1048576) }'; }
need_space() { # folder, GiB, what for
    mkdir -p "$1"
    [ "$(free_gb "$1")" -ge "$2" ] || die "$3 needs about $2 GiB free in $1, which has $(free_gb "$1") GiB"
}

# --- 1. the base image ------------------------------------------------------------
phase "base image ($BASE)"
debian_mirror() {
    # The mirror apt already uses (it may be a local or pinned one), else Debian's.
    local uri
    # shellcheck disable=SC2016 # $(REPO_URI) is apt's format field, not the shell's
    uri=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' 'Origin: Debian' 2>/dev/null | head -n 1)
    echo "${uri:-http://deb.debian.org/debian/}"
}
build_standin() {
    local tarball=$CACHE/standin-bookworm-python3.tar rootfs
    if [ ! -s "$tarball" ]; then
        [ "$(id -u)" = 0 ] || die "building the stand-in base needs root (debootstrap)"
        if ! command -v debootstrap >/dev/null 2>&1; then
            die "$BASE cannot be pulled and debootstrap is missing to build a stand-in (apt-get install debootstrap)"
        fi
        need_space "$CACHE" 2 "the stand-in base"
        rootfs=$CACHE/rootfs.tmp
        rm -rf "$rootfs"
        echo "   debootstrap bookworm from $(debian_mirror) (+ $STANDIN_PACKAGES)"
        debootstrap --variant=minbase --include="$STANDIN_PACKAGES" bookworm "$rootfs" "$(debian_mirror)" \
            >"$WORK/debootstrap.log" 2>&1 || {
            tail -n 30 "$WORK/debootstrap.log" >&2
            die "debootstrap failed (log above)"
        }
        # As in python:3.11-slim, pip installs into the system Python (PEP 668's
        # marker would refuse the Dockerfile's `pip install`); no apt caches in the image.
        rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    # python:3.11-slim's environment and command, so the Dockerfile sees the same.
    podman import -q \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' \
        "$tarball" "localhost/$BASE" >/dev/null
    echo "   stand-in localhost/$BASE from Debian bookworm"
}
if podman image exists "$BASE" 2>/dev/null; then
    echo "   $BASE is in podman's storage"
elif timeout 60 podman pull -q "docker.io/library/$BASE" >"$WORK/pull.log" 2>&1; then
    echo "   pulled docker.io/library/$BASE"
else
    echo "   cannot pull docker.io/library/$BASE ($(tail -n 1 "$WORK/pull.log" | cut -c1-120)); using a stand-in"
    build_standin
fi

# The wheelhouse is fetched for the host's Python: it must be the image's.
py_version='import sys; print("%d.%d" % sys.version_info[:2])'
image_python=$(podman run --rm "${LIMITS[@]}" "$BASE" python3 -c "$py_version" 2>"$WORK/run.log") || {
    cat "$WORK/run.log" >&2
    die "cannot run python3 in $BASE"
}
host_python=$("$PYTHON" -c "$py_version")
[ "$host_python" = "$image_python" ] ||
    die "$PYTHON is Python $host_python and $BASE has $image_python: set PYTHON to a Python $image_python with pip"

# --- 2. the wheelhouse --------------------------------------------------------------
# Everything `pip install` in the Dockerfile needs, fetched once by the host's
# pip, keyed by what decides it (the dependency pins and the torch pins).
phase "wheelhouse"
WHEELS=$CACHE/wheels
key=$(cat pyproject.toml Dockerfile | grep -E 'torch|==|>=|requires' | sha256sum | cut -c1-16)
if [ ! -e "$WHEELS/.complete-$key" ]; then
    need_space "$CACHE" 4 "the wheelhouse"
    # Afresh when the pins change: one torch in it, and no stale wheels piling up.
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    # torch through the Dockerfile's own index (the CPU build) where it answers;
    # else through the host's configured indexes (PyPI's torch carries CUDA: the
    # build docker-compose's clipsearch-gpu makes). Which one came is read from
    # the wheel below, since the host's pip also searches its local sources.
    # pip's output goes to a log shown on failure (the host's file:// indexes make it warn per package).
    download() {
        "$PYTHON" -m pip download -q -d "$WHEELS" "$@" >>"$WORK/pip.log" 2>&1 || {
            tail -n 30 "$WORK/pip.log" >&2
            die "pip download $* failed (last 30 lines above)"
        }
    }
    # shellcheck disable=SC2086 # TORCH_PINS is a list of requirements
    if ! "$PYTHON" -m pip download -q --retries 1 --timeout 20 -d "$WHEELS" --index-url "$TORCH_INDEX_DEFAULT" \
        $TORCH_PINS >"$WORK/torch-index.log" 2>&1; then
        echo "   $TORCH_PINS not found through $TORCH_INDEX_DEFAULT: through the host's indexes instead"
        # shellcheck disable=SC2086
        download $TORCH_PINS
    fi
    # setuptools and wheel: the build backend pyproject.toml names (pip builds it isolated).
    download --find-links "$WHEELS" "setuptools>=68" wheel .
    touch "$WHEELS/.complete-$key"
else
    echo "   cached in $WHEELS"
fi
# The build argument names the index whose torch the wheelhouse holds (pip.conf's
# no-index keeps pip off every index): a +cpu wheel is the Dockerfile's default.
torch_wheel=$(find "$WHEELS" -name 'torch-[0-9]*.whl' -printf '%f\n' | head -n 1)
[ -n "$torch_wheel" ] || die "no torch wheel in $WHEELS"
case $torch_wheel in
*+cpu*) TORCH_INDEX=$TORCH_INDEX_DEFAULT torch_build="CPU build" ;;
*) TORCH_INDEX=https://pypi.org/simple torch_build="PyPI's, with CUDA, as clipsearch-gpu's" ;;
esac
echo "   $(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1); $torch_wheel ($torch_build)"
cat >"$WORK/pip.conf" <<'EOF'
[global]
no-index = true
find-links = /wheels
EOF

# --- 3. build --------------------------------------------------------------------------
phase "build"
old_id=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
# Measured: committing a layer holds it four times over for a while (the
# container's files, buildah's blob and c/image's copy in /var/tmp, the new
# layer: a 1.4 GiB probe layer peaked at 5.6 GiB), and installed wheels take
# ~1.9 times their size (2.9 GiB of wheels, a 5.4 GiB torch layer): a first
# build takes ~7.5 times the wheelhouse for a minute (~22 GiB with PyPI's
# torch), plus 2 GiB so that a shared disk is not filled to the last byte.
# Over cached layers, ~1 GiB.
if [ -n "$old_id" ]; then
    need=4
else
    need=$(du -sk "$WHEELS" | awk '{ printf "%d", $1 * 7.5 / 1048576 + 2.999 }')
fi
need_space "$(podman info --format '{{.Store.GraphRoot}}')" "$need" "the image build"
# --format docker: the OCI format has no HEALTHCHECK and drops it. --network none:
# pip reads only the wheelhouse, so the build proves it needs nothing else.
# TORCH_INDEX names where the wheelhouse's torch came from (pip.conf's no-index
# keeps pip off every index); the Dockerfile is used as it is.
podman build --pull=never --network none --format docker \
    -v "$WHEELS:/wheels:ro" -v "$WORK/pip.conf:/etc/pip.conf:ro" \
    --build-arg TORCH_INDEX="$TORCH_INDEX" \
    -t "$IMAGE" -f Dockerfile . >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    die "podman build failed (last 40 lines above)"
}
# One line a step, and whether podman's layer cache answered it.
awk '/^STEP / { if (step) print step; step = substr($0, 1, 96) } /^--> Using cache/ { step = step "  (cached)" }
     END { if (step) print step }' "$WORK/build.log" | sed 's/^/   /'
new_id=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # The previous test image: its layers that the new one shares stay as cache.
    podman rmi "$old_id" >/dev/null 2>&1 || true
fi

# --- 4. run -----------------------------------------------------------------------------
phase "start and /health"
# Its own network namespace with the port published, as docker-compose runs it:
# the HEALTHCHECK asks 127.0.0.1:8000 inside the container, which on the host's
# network would be whatever else listens on 8000.
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# stderr to a file: podman 4.3 without systemd logs "unable to get systemd
# connection" for the health check's timer, harmless; `healthcheck run` below
# runs the check itself.
podman run -d --name "$CONTAINER" -p "127.0.0.1:$port:8000" "${LIMITS[@]}" \
    -e HF_HUB_OFFLINE=1 "$IMAGE" --model demo >/dev/null 2>"$WORK/run.log" || {
    cat "$WORK/run.log" >&2
    die "podman run failed"
}
URL=http://127.0.0.1:$port
for _ in $(seq 180); do
    if curl -fsS -m 2 "$URL/health" >/dev/null 2>&1; then break; fi
    if [ "$(podman inspect --format '{{.State.Running}}' "$CONTAINER")" != true ]; then
        die "the container exited before /health answered (log below)"
    fi
    sleep 1
done
curl -fsS -m 5 "$URL/health" >/dev/null || die "/health did not answer within 180 s on $URL"
echo "   /health answered after $((SECONDS - PHASE_START)) s on $URL"

json() { # a field of the JSON on stdin, by a Python expression on `d`
    "$PYTHON" -c "import json, sys; d = json.load(sys.stdin); print($1)"
}
phase "add two images, search"
model=$(curl -fsS -m 10 "$URL/ready" | json 'd["model"]["name"]')
[ "$model" = demo ] || die "/ready says the model is $model, not demo"
user=$(podman exec "$CONTAINER" id -un)
[ "$user" = clipsearch ] || die "the service runs as $user, not as the Dockerfile's clipsearch user"
# A red circle and a blue square, in the demo model's vocabulary
# (docs/demo-model.md), written as PNGs with the standard library only, so the
# host needs no Pillow and the pictures owe nothing to the image under test.
"$PYTHON" - "$WORK" <<'EOF'
import struct
import sys
import zlib
from pathlib import Path


def png(path, inside, colour, size=128, background=(200, 200, 200)):
    """An 8-bit RGB PNG: `colour` where inside(x, y), else `background`."""
    rows = b"".join(
        b"\0" + b"".join(bytes(colour if inside(x, y) else background) for x in range(size)) for y in range(size)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    idat = zlib.compress(rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


out = Path(sys.argv[1])
png(out / "red-circle.png", lambda x, y: (x - 64) ** 2 + (y - 64) ** 2 <= 40**2, (220, 20, 20))
png(out / "blue-square.png", lambda x, y: 28 <= x <= 100 and 28 <= y <= 100, (20, 40, 220))
EOF
curl -fsS -m 60 -o "$WORK/added.json" "$URL/v1/images" \
    -F "files=@$WORK/red-circle.png" -F "files=@$WORK/blue-square.png" -F ids=red-circle -F ids=blue-square ||
    die "POST /v1/images failed"
[ "$(json 'len(d["items"])' <"$WORK/added.json")" = 2 ] || die "POST /v1/images stored $(cat "$WORK/added.json")"
for pair in "a red circle:red-circle" "a blue square:blue-square"; do
    query=${pair%%:*}
    want=${pair#*:}
    curl -fsS -m 30 -o "$WORK/hits.json" "$URL/v1/search/text" \
        -H 'content-type: application/json' -d "{\"query\": \"$query\", \"k\": 2}" ||
        die "POST /v1/search/text failed"
    got=$(json '" ".join("%s=%.3f" % (h["id"], h["score"]) for h in d["results"])' <"$WORK/hits.json")
    [ "${got%%=*}" = "$want" ] || die "\"$query\" ranked $got; $want should be first"
    echo "   \"$query\": $got"
done

phase "podman healthcheck run"
# The Dockerfile's HEALTHCHECK, run in the container (kept only with --format docker).
podman image inspect --format '{{json .Config.Healthcheck}}' "$IMAGE" | grep -q /health ||
    die "the image has no HEALTHCHECK (built without --format docker?)"
health=$(podman healthcheck run "$CONTAINER" 2>&1) || die "podman healthcheck run: ${health:-unhealthy}"
echo "   ${health:-healthy}"

phase "remove the container"
podman rm -f -v --time 5 "$CONTAINER" >/dev/null 2>"$WORK/run.log" || {
    cat "$WORK/run.log" >&2
    die "podman rm failed"
}
phase ""
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image-test: OK: $IMAGE ($(awk -v b="$size" 'BEGIN { printf "%.2f GB", b / 1e9 }'), torch: $torch_build)" \
    "built, started, answered /health, ranked the right image first, passed its HEALTHCHECK"
echo "   kept for the next run: $CACHE ($(du -sh "$CACHE" | cut -f1)) and the image's layers in podman's storage"
