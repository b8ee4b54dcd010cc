# One virtual environment in .venv; every target creates it when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install serve test lint bench image-test image-clean train-demo eval-demo train-blip-demo eval-blip-demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first and pinned, so nothing pulls in another build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

serve: install
	$(VENV)/bin/clipsearch serve

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

# Builds the Dockerfile's image with podman, runs it, and checks it serves (deploy/image_test.sh).
# Needs no .venv: .ci/run runs it before `make install`.
image-test:
	bash deploy/image_test.sh

# Drops what image-test keeps between runs: the image, the stand-in base, the wheelhouse.
image-clean:
	bash deploy/image_test.sh clean

train-demo: install
	$(PY) -m demo.train_clip --steps 3000 --seed 0 --out models/weights/demo.pt

eval-demo: install
	$(PY) -m demo.eval_clip

# The captioner goes on from the bundled one, as the committed one went on from its predecessor
# (docs/demo-model.md); from scratch: --init-from none --vision-from a demo-vit checkpoint, --steps 8000.
train-blip-demo: install
	$(PY) -m demo.train_blip caption --steps 2000 --seed 0 --lr 5e-4
	$(PY) -m demo.train_blip itm --steps 6000 --seed 0

eval-blip-demo: install
	$(PY) -m demo.eval_blip caption
	$(PY) -m demo.eval_blip rerank

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
