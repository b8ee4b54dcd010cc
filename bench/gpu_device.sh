#!/usr/bin/env bash
# The GPU benchmarks on an offline CUDA host that has Python 3.12, torch and
# torchvision but not the service's other dependencies (docs/gpu.md).
#
#   bash bench/gpu_device.sh            # on the GPU host, from the repository root, with .whl/ beside it
#   GPU_BENCH_DRY_RUN=1 bash bench/gpu_device.sh   # here, on the CPU: --device cpu --smoke, the venv's python
#   GPU_PROFILE=1 bash bench/gpu_device.sh         # py-spy profiles of the server under load instead
#
# Installs the wheels in .whl/ into /tmp/site (no index, no dependencies: the
# host's torch stays), prints the devices and versions, then runs bench.gpu
# (in-process, old path vs new) and bench.gpu_server (the real server over
# HTTP), each under its own timeout. Everything goes to $OUT/gpu.log (or
# ./gpu-bench.log), the figures also to $OUT/gpu.json and $OUT/server.json.
# One failing step does not stop the next: the log says what failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-bench-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PY:-python3}"
SITE="${SITE:-/tmp/site}"
TF_SITE="${SITE}-transformers"
BENCH_ARGS=()
SERVER_ARGS=()
GPU_TIMEOUT=170
SERVER_TIMEOUT=250
if [ "${GPU_BENCH_DRY_RUN:-0}" = 1 ]; then
    PY="${PY_DRY:-/work/main/.venv/bin/python}"
    SITE="$(mktemp -d)/site"
    TF_SITE="${SITE}-transformers"
    BENCH_ARGS=(--device cpu --smoke)
    SERVER_ARGS=(--device cpu --smoke --processes 2)
fi
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

run_all() {
    started=$SECONDS

    step "devices and versions"
    nvidia-smi -L 2>&1 || echo "no nvidia-smi"
    "$PY" -c 'import sys, torch, torchvision; print("python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'

    step "wheels from .whl/ into $SITE"
    # pip's --python-version checks the wheels' tags for the GPU host's 3.12 when run elsewhere (the dry run).
    TAGS=(--python-version 3.12 --only-binary=:all:)
    shopt -s nullglob
    wheels=(.whl/*.whl)
    others=() transformers=()
    for w in "${wheels[@]}"; do
        case "$(basename "$w")" in transformers-*) transformers+=("$w") ;; *) others+=("$w") ;; esac
    done
    echo "${#wheels[@]} wheels, $(du -shL .whl 2>/dev/null | cut -f1)"
    "$PY" -m pip install -q --no-index --no-deps "${TAGS[@]}" --target "$SITE" "${others[@]}" || echo "WHEEL INSTALL FAILED"
    if [ ${#transformers[@]} -gt 0 ]; then
        "$PY" -m pip install -q --no-index --no-deps "${TAGS[@]}" --target "$TF_SITE" "${transformers[@]}" || echo "TRANSFORMERS WHEEL INSTALL FAILED"
    fi
    if [ "${GPU_BENCH_DRY_RUN:-0}" = 1 ]; then
        # The wheels are for 3.12; the dry run's interpreter keeps its own packages.
        SITE_PATH=""
    else
        SITE_PATH="$SITE:"
    fi

    step "import check"
    # The project pins transformers 5.24; the host's own is used if 5.24 does not import beside the host's hub.
    export PYTHONPATH="${SITE_PATH}$PWD"
    if [ -z "${SITE_PATH}" ] || ! PYTHONPATH="$TF_SITE:$PYTHONPATH" "$PY" -c 'import service.app'; then
        echo "using the interpreter's own transformers"
    else
        export PYTHONPATH="$TF_SITE:$PYTHONPATH"
    fi
    "$PY" -c 'import transformers, open_clip, fastapi, faiss, pydantic, uvicorn; print("transformers", transformers.__version__, "open_clip", open_clip.__version__, "fastapi", fastapi.__version__, "faiss", faiss.__version__)' || echo "IMPORT CHECK FAILED"

    if [ "${GPU_PROFILE:-0}" = 1 ]; then
        # Diagnosis instead of the benchmarks: where the server's time goes under each load (bench/gpu_profile.py).
        step "bench.gpu_profile (timeout ${SERVER_TIMEOUT}s)"
        profile_args=()
        [ "${GPU_BENCH_DRY_RUN:-0}" = 1 ] && profile_args=(--device cpu --smoke --seconds 4)
        timeout -k 10 "$SERVER_TIMEOUT" "$PY" -m bench.gpu_profile "${profile_args[@]}" --out "$OUT"
        echo "bench.gpu_profile exit $?"
        return
    fi

    step "bench.gpu: in-process towers, old path vs new (timeout ${GPU_TIMEOUT}s)"
    timeout -k 10 "$GPU_TIMEOUT" "$PY" -m bench.gpu "${BENCH_ARGS[@]}" --json "$OUT/gpu.json"
    echo "bench.gpu exit $?"

    step "bench.gpu_server: the real server over HTTP (timeout ${SERVER_TIMEOUT}s)"
    figures=()
    [ -s "$OUT/gpu.json" ] && figures=(--tower-figures "$OUT/gpu.json")
    timeout -k 10 "$SERVER_TIMEOUT" "$PY" -m bench.gpu_server "${SERVER_ARGS[@]}" "${figures[@]}" --json "$OUT/server.json"
    echo "bench.gpu_server exit $?"

    step "done in $((SECONDS - started)) s"
    nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv 2>/dev/null || true
}

# A pipe, not exec > >(tee): the script returns only once the log is complete.
run_all 2>&1 | tee -a "$LOG"
