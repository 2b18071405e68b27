# Two entry points for a fresh machine (see README):
#   make demo   set up, then train -> evaluate -> generate on tinyshakespeare
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The shared data mirror is used when it sits beside the checkout; otherwise data is downloaded once.
ZOO_DATA_DIR ?= $(if $(wildcard ../shared/data/MANIFEST.json),$(abspath ../shared/data),)
export ZOO_DATA_DIR
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup demo test lint notebooks bench golden clean

# What `make test` needs: the test tools, ROUGE, the LiteRT interpreter, JAX on the CPU and the
# notebook runner; not torch/transformers (the `reference` extra: see `make golden`). Installed
# at the versions pinned in constraints.txt.
EXTRAS ?= dev,eval,litert,jax,notebooks
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

$(VENV)/.installed: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m zoo.demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 --durations=25 tests

notebooks: setup
	cd notebooks && for nb in *.ipynb; do $(abspath $(PY)) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1500 $$nb || exit 1; done
	$(PY) notebooks/strip_tf_logs.py notebooks/*.ipynb

# CPU benchmarks against their peers (keras-hub from the bench extra); GPU runs: see bench/RESULTS.md
bench: setup
	$(PIP_INSTALL) -e ".[$(EXTRAS),bench]"
	$(PY) bench/train_throughput.py --tiny --vocab 8192
	$(PY) bench/generate_speed.py --quick --jit
	$(PY) bench/input_pipeline.py
	$(PY) bench/quality.py --budget 120

lint: setup
	$(VENV)/bin/ruff check .

# Rewrite the GPT-2 golden files (tests/golden/) from Hugging Face's implementation: installs the
# `reference` extra (transformers and a CPU torch, from PyTorch's CPU index) into .venv first.
golden: setup
	$(PIP_INSTALL) -e ".[$(EXTRAS),reference]" --extra-index-url https://download.pytorch.org/whl/cpu
	$(PY) tests/golden/make_gpt2_golden.py

clean:
	rm -rf $(VENV) runs
