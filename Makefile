# Two commands for a newcomer: `make demo` trains the example model on the
# embedded Fashion-MNIST, `make test` runs the test suite. Both set up what
# they need (virtualenv, requirements, Debian's Fashion-MNIST), idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.stamp-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test clean

setup: $(INSTALLED) $(FASHION_MNIST)

$(INSTALLED): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

demo: setup
	$(BIN)/python scripts/train.py --model=RelativePerformer --dataset=fashion_mnist --preset=tiny

test: setup
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) *.egg-info
