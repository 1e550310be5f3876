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

STAGES := generate prepare base pt sft merge report

.PHONY: all setup test lock repro $(STAGES) eval push pull metrics clean

all: $(STAMP)
	$(BIN)/dvc repro
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

repro: $(STAMP)
	$(BIN)/dvc repro

# One stage and whatever upstream of it changed.
$(STAGES): $(STAMP)
	$(BIN)/dvc repro $@

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
