# The studies that chose the recipe (research/README.md says what each asked and found).
# Included at the end of the Makefile: `make ablations`, `make reconstruction-curve`,
# `make reconstruction-tradeoff`, `make film-reviews`, `make wide-stages`, `make gpu-report`. Each reuses
# what it finished before.
.PHONY: ablations reconstruction-curve reconstruction-tradeoff film-reviews wide-stages gpu-report

# Every research/ablations/configs/*.yaml at one reduced budget -> results/ablations.md + .html
# (the table notebook 5 reads). Delete results/ablations/NAME.json to redo a row; ~10 min a row on 2 cores.
ablations: install data
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m research.ablations

# Reconstruction vs training budget: research/reconstruction/configs/reconstruction-budget*.yaml, every
# checkpoint tested on held-out text -> research/reconstruction/results/. ~15 + 60 + 65 min as first
# measured (another 2-core CPU), then ~20 + 25 min (k = 5 again, and at rank 64) on a 2-core CPU with native bf16.
reconstruction-curve: install data
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m research.reconstruction.budget

# Reconstruction against embedding from stage 1 (gem-smollm2-135m-gpu): five runs from its weights,
# then every run on 32 held-out texts per length -> research/reconstruction/results/reconstruction_tradeoff.md.
# ~50 + 4 x 27 min of training on a bf16 CPU, ~6 min of evaluation per run.
reconstruction-tradeoff: install data
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m research.reconstruction.tradeoff

# The stop issue's film-review measurement: stage 2 (before the stop), stage 3 (the stop), stage 4 (the
# stop, then 40 contrastive steps), stage 5 (rank 32, copies on a wider corpus) and the shipped stage 6
# (rank 64 stored at 36, read back with 8 beams)
# reconstructing 40 movie-review sentences per length -> research/reconstruction/results/stop/film-reviews.md.
# 17-20 min a model on 2 cores beside another evaluation, 10 min alone; rows are reused while a model's
# weights are unchanged.
film-reviews: install data
	$(BIN)/python -m lab convert smollm2-135m
	$(BIN)/python -m research.reconstruction.film_reviews

# The shipped model's six stages, the base model's best pooling (echo) and all-MiniLM-L6-v2 on the wide
# suite (its embedding half, fp32) -> research/wide/results/report.md. 14-20 min a GEM model on 2 cores
# (echo reads each text twice); delete a model's file to redo it.
WIDE := research/wide/results
WIDE_EVAL = $(BIN)/python -m lab eval --suite wide --dtype float32 --skip mmlu,perplexity,perplexity_ood,reconstruction
WIDE_FILES := $(WIDE)/base.json $(WIDE)/gem-gpu.json $(WIDE)/gem-anchored.json $(WIDE)/gem-stop.json $(WIDE)/gem-contrast.json \
	$(WIDE)/gem-mixed.json $(WIDE)/gem.json $(WIDE)/minilm.json
wide-stages: $(WIDE_FILES)
	$(BIN)/python -m lab report $(WIDE_FILES) --out $(WIDE)/report
$(WIDE)/gem-gpu.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m-gpu --label "stage 1 (gem-smollm2-135m-gpu)" --output $@
$(WIDE)/gem-anchored.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m-anchored --label "stage 2 (gem-smollm2-135m-anchored)" --output $@
$(WIDE)/gem-stop.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m-stop --label "stage 3 (gem-smollm2-135m-stop)" --output $@
$(WIDE)/gem-contrast.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m-contrast --label "stage 4 (gem-smollm2-135m-contrast)" --output $@
$(WIDE)/gem-mixed.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m-mixed --label "stage 5 (gem-smollm2-135m-mixed)" --output $@
$(WIDE)/gem.json: | install data
	$(WIDE_EVAL) --model gem-smollm2-135m --label "GEM-SmolLM2-135M (stage 6, shipped)" --output $@
$(WIDE)/base.json: | install data
	$(WIDE_EVAL) --model smollm2-135m --pooling echo --label SmolLM2-135M --output $@
$(WIDE)/minilm.json: | install data
	$(WIDE_EVAL) --model minilm --label all-MiniLM-L6-v2 --output $@

# The GPU recipe's three runs (trained on a lent GPU with research/gpu_runs/device/): their tables.
GPU_RESULTS := research/gpu_runs/results
gpu-report: install data
	$(BIN)/python -m lab report results/base.json results/perplexity-base.json $(sort $(wildcard $(GPU_RESULTS)/runs/gpu-?.json)) results/minilm.json --out $(GPU_RESULTS)/gpu_recipe
	$(BIN)/python -m lab report $(sort $(wildcard $(GPU_RESULTS)/runs/curve/*.json)) --out $(GPU_RESULTS)/gpu_curve
