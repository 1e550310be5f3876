# medforge: `make all` runs the whole pipeline on the tiny default; `make test` runs what CI checks.
# Every target bootstraps .venv from requirements.lock on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := $(shell grep -E '^torch==' requirements.in)
export PYTHONPATH := $(CURDIR)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

STAGES := generate prepare base pt sft rm report
ALIGN := ppo dpo orpo kto grpo

.PHONY: all setup test lock repro $(STAGES) $(ALIGN) eval push pull metrics clean

# The default pipeline: data -> base -> PT -> SFT -> pipeline.align (params.yaml) -> merge -> eval -> report.
all: $(STAMP)
	$(BIN)/dvc repro report
	@echo; echo "Evaluation (reports/eval.md, plot: plots/eval.png):"; cat reports/eval.md

setup: $(STAMP)

$(STAMP): requirements.lock requirements.in
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements.lock
	$(BIN)/pip check
	touch $@

lock: $(STAMP)
	$(BIN)/python tools/lock.py

# Every stage, every alignment method included.
repro: $(STAMP)
	$(BIN)/dvc repro

# One stage and whatever upstream of it changed.
$(STAGES): $(STAMP)
	$(BIN)/dvc repro $@

# An alignment stage, then its merge and evaluation; prints both metric files.
$(ALIGN): $(STAMP)
	$(BIN)/dvc repro eval@$@
	@cat metrics/$@.json; echo; cat metrics/eval/$@.json; echo

eval: $(STAMP)
	$(BIN)/dvc repro report

metrics: $(STAMP)
	$(BIN)/dvc metrics show

push: $(STAMP)
	$(BIN)/dvc push

pull: $(STAMP)
	$(BIN)/dvc pull

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf data/generated data/prepared models dvclive metrics samples reports plots
