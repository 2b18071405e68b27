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

.PHONY: setup demo test lint notebooks bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,notebooks,jax]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m zoo.demo

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider --timeout=900 tests

notebooks: setup
	cd notebooks && for nb in *.ipynb; do $(abspath $(PY)) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=1500 $$nb || exit 1; done
	$(PY) notebooks/strip_tf_logs.py notebooks/*.ipynb

# CPU benchmarks against their peers (keras-hub from the bench extra); GPU runs: see bench/RESULTS.md
bench: setup
	$(PY) -m pip install --quiet -e ".[dev,notebooks,jax,bench]"
	$(PY) bench/train_throughput.py --tiny --vocab 8192
	$(PY) bench/generate_speed.py --quick --jit
	$(PY) bench/input_pipeline.py
	$(PY) bench/quality.py --budget 120

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
