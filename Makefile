# medforge: `make all` runs the whole pipeline on the tiny default; `make test` runs what CI checks.
# Every target bootstraps .venv from requirements.lock on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The training image runs make with VENV=/opt/venv STAMP=: its venv is prebuilt (docker/train.Dockerfile).
STAMP := $(VENV)/.installed
TORCH := $(shell grep -E '^torch==' requirements.in)
# Without an NVIDIA GPU, torch's CPU build (about 200 MB) from PyTorch's index where it is reachable: PyPI's is the
# CUDA build (GBs). Asked only when setup runs.
TORCH_CPU_INDEX = https://download.pytorch.org/whl/cpu
TORCH_INDEX = $(shell nvidia-smi -L >/dev/null 2>&1 || { $(PYTHON) -c "import urllib.request as u; \
	u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=10)" 2>/dev/null && echo --extra-index-url $(TORCH_CPU_INDEX); })
export PYTHONPATH := $(CURDIR)
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

# Distributed training (docs/distributed.md), read by medforge.launch: `make sft NPROC=8 DIST=zero3`.
DIST ?= single
NPROC ?= 1
NNODES ?= 1
NODE_RANK ?= 0
MASTER_ADDR ?= 127.0.0.1
MASTER_PORT ?= 29500
export DIST NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT

# The real families' vocabularies and chat templates, for their fixtures (medforge/fixtures.py).
LLAMA_FIXTURE_FILES = '*/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf' \
	'*/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf' '*/vendor/llama.cpp/models/templates'

# llama-cpp-python compiles from source (no wheels on PyPI), portable: the default -march=native build crashes on
# quantized models on some CPUs. Only the libraries medforge loads: LLAVA_BUILD=OFF skips libmtmd (multimodal), a
# sixth of the compile (BENCHMARKS.md). Its converter ships only in that source: unpack it, at the same version.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
LLAMA_CONVERTER = $(BIN)/pip download -q --no-deps --no-binary llama-cpp-python --require-hashes \
	   -r $(VENV)/llama-cpp.txt -d $(VENV)/src \
	&& tar -xzf $(VENV)/src/llama_cpp_python-*.tar.gz -C $(VENV) --strip-components=2 --wildcards \
	   '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py' \
	   $(LLAMA_FIXTURE_FILES) \
	&& rm -rf $(VENV)/src

# GPU-only extras (DeepSpeed, Liger kernels); DeepSpeed's CUDA ops compile on first use, not at install.
GPU_EXTRAS := DS_BUILD_OPS=0 $(BIN)/pip install -q --no-deps --require-hashes -r requirements-gpu.lock

STAGES := generate prepare base pt sft rm gguf gptq report
ALIGN := ppo grpo
# The methods trained on the preference pairs: the keys of params.yaml's `preference` (in the block form DVC writes
# back, each a line indented two spaces under it). Their stages are preference@NAME, merge-preference@NAME, ...
PREFERENCE := $(shell awk '/^[^ \#]/ {p = /^preference:/} p && /^  [a-z]/ {sub(":.*", ""); print $$1}' params.yaml)

.PHONY: all preset plan env setup setup-gpu system-deps serve bench-serve exp compare test bench bench-checkpoints bench-data bench-generate bench-cpu-attention bench-cpu-numerics quantize deps lock repro $(STAGES) $(ALIGN) $(PREFERENCE) eval push pull metrics clean

# The default pipeline: data -> base -> PT -> SFT -> pipeline.align (params.yaml) -> merge -> eval -> report.
# `make all PRESET=qwen2.5-7b-qlora` first writes that preset into params.yaml (see `preset`).
all: $(STAMP)
	$(if $(PRESET),$(BIN)/python -m medforge.presets $(PRESET))
	$(BIN)/dvc repro report
	@echo; echo "Evaluation (reports/eval.md, plot: plots/eval.png):"; cat reports/eval.md
	@echo; $(BIN)/python -m medforge.provenance times metrics models

# A ready configuration for a real checkpoint (configs/presets/NAME.yaml; `make preset` lists them) written into
# params.yaml, where make, dvc repro and dvc exp run all read it; `git checkout params.yaml` goes back.
preset: $(STAMP)
	$(BIN)/python -m medforge.presets $(PRESET)

# What every artifact's provenance records of this machine: commit, locks, libraries, device.
env: $(STAMP)
	@$(BIN)/python -m medforge.provenance

setup: $(STAMP)

# llama-cpp-python compiles (minutes, on every core) while pip downloads and installs the rest beside it. On a machine
# with an NVIDIA GPU the GPU extras come too (their Triton comes with the CUDA build of torch).
$(STAMP): requirements.lock requirements.in requirements-gpu.lock
	$(PYTHON) -m venv $(VENV)
	grep '^llama_cpp_python==' requirements.lock > $(VENV)/llama-cpp.txt
	grep -v '^llama_cpp_python==' requirements.lock > $(VENV)/rest.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/llama-cpp.txt & \
	  compile=$$!; $(BIN)/pip install -q "$(TORCH)" $(TORCH_INDEX) \
	  && $(BIN)/pip install -q --no-deps --require-hashes -r $(VENV)/rest.txt; rest=$$?; \
	  wait $$compile && test $$rest = 0
	$(LLAMA_CONVERTER)
	rm $(VENV)/llama-cpp.txt $(VENV)/rest.txt
	if nvidia-smi -L >/dev/null 2>&1; then $(GPU_EXTRAS); fi
	$(BIN)/pip check
	touch $@

setup-gpu: $(STAMP)
	@nvidia-smi -L >/dev/null 2>&1 || { echo "setup-gpu: no NVIDIA GPU here (nvidia-smi -L failed)"; exit 1; }
	$(GPU_EXTRAS)
	$(BIN)/pip check

# dvc.yaml's code deps from the import graph (tools/deps.py); a test fails while they are stale.
deps: $(STAMP)
	$(BIN)/python tools/deps.py

lock: $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python tools/lock.py

# Every stage, every alignment method included.
repro: $(STAMP)
	$(BIN)/dvc repro

# One stage and whatever upstream of it changed.
$(STAGES): $(STAMP)
	$(BIN)/dvc repro $@

# An alignment stage, then its merge and evaluation; prints both metric files.
$(ALIGN) $(PREFERENCE): $(STAMP)
	$(BIN)/dvc repro $(if $(filter $@,$(PREFERENCE)),eval-preference,eval)@$@
	@cat metrics/$@.json; echo; cat metrics/eval/$@.json; echo

# GGUF files (f16, q8_0, q4_k_m: params.yaml gguf.types) and GPTQ 4-bit of the model the pipeline ends with.
quantize: $(STAMP)
	$(BIN)/dvc repro gguf gptq

# The pipeline's table, and its final model against every quantized variant (reports/quantization.md).
eval: $(STAMP)
	$(BIN)/dvc repro report quantization
	@cat reports/quantization.md

# Peak GPU memory and tokens/s of each training stage, estimated for params.yaml on a GPU: `make plan GPU=l4-24g`,
# `make plan GPU_GB=24`; with DIST and NPROC as for training. Says which knob to turn when a stage does not fit.
plan: $(STAMP)
	$(BIN)/python -m medforge.plan $(if $(GPU),--gpu $(GPU)) $(if $(GPU_GB),--gpu-gb $(GPU_GB))

# params.yaml `serve:` says what and where; `make serve HOST=0.0.0.0 PORT=8000 MODEL=models/merged/dpo` overrides.
# Beyond loopback it needs MEDFORGE_API_KEY.
serve_param = $(shell $(BIN)/python -c 'from medforge import params; print(params.load("serve").$(1))')
SERVE_MODEL = $(or $(MODEL),$(call serve_param,model))
serve: $(STAMP)
	$(if $(filter models/gguf/%,$(SERVE_MODEL)),$(BIN)/dvc repro gguf)
	$(BIN)/python -m serve $(if $(MODEL),--model $(MODEL)) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

metrics: $(STAMP)
	$(BIN)/dvc metrics show

# An experiment: the `make all` pipeline with params changed, `make exp SET="preference.dpo.beta=0.2 sft.epochs=5"`
# (each a `dvc exp run -S`); its results stay in the workspace and under its name in `dvc exp show`.
exp: $(STAMP)
	@test -n "$(SET)" || { echo 'exp: say what to change: make exp SET="preference.dpo.beta=0.2"'; exit 1; }
	$(BIN)/dvc exp run report $(foreach setting,$(SET),-S $(setting))

# The runs side by side (the commit, the workspace, each experiment): the params that differ, the headline metrics
# and stage times; reports/compare.md and plots/compare.png.
compare: $(STAMP)
	$(BIN)/python -m eval.compare --table reports/compare.md --plot plots/compare.png

push: $(STAMP)
	$(BIN)/dvc push

# What dvc.lock records as built, from the remote: a stage never run has nothing there (plain `dvc pull` fails on it).
pull: $(STAMP)
	@test -f dvc.lock || { echo "pull: no dvc.lock here: commit the one \`make all\` wrote (README \"Sharing results\")"; exit 1; }
	$(BIN)/dvc pull $$($(BIN)/python -c 'import yaml; print(*yaml.safe_load(open("dvc.lock"))["stages"])')

# GPU throughput: fast configuration vs plain baseline, side by side (BENCHMARKS.md); skips without a GPU.
bench: $(STAMP)
	$(BIN)/python -m bench.throughput $(BENCH_ARGS)

# CPU generation speed: llama.cpp on the q4_k_m GGUF vs transformers fp32 on the same model, side by side.
bench-generate: gguf
	$(BIN)/python -m bench.generation $(BENCH_ARGS)

# CPU SFT step time: per-conversation `varlen` attention vs SDPA's block-diagonal mask over the packed row.
bench-cpu-attention: pt
	$(BIN)/python -m bench.cpu_attention $(BENCH_ARGS)

# Which CPU kernel choices (ATEN_CPU_CAPABILITY, oneDNN, MKL_CBWR, threads, bf16) change SFT's losses, side by side.
bench-cpu-numerics: pt prepare
	$(BIN)/python -m bench.cpu_numerics $(BENCH_ARGS)

# `prepare` on 1M ShareGPT records and a 10 GB text file (params.yaml bench_data), vs the in-memory baseline.
bench-data: $(STAMP)
	$(BIN)/python -m bench.data $(BENCH_ARGS)

# Checkpointing's cost to a training stage (STAGE, default sft): none, params.yaml's, every 50 steps, side by side.
bench-checkpoints: $(STAMP)
	$(BIN)/python -m bench.checkpoints --stage $(or $(STAGE),sft) $(BENCH_ARGS)

# Debian packages: the browser test's (make test) and the container test's (make docker-test). Each target installs
# its own when missing and this user may (root, or sudo without a password); otherwise it says which are missing.
TEST_DEPS := chromium chromium-driver fonts-wqy-zenhei
DOCKER_DEPS := docker.io debootstrap
apt_install = dpkg -s $(1) >/dev/null 2>&1 || { \
	if ! command -v apt-get >/dev/null; then SUDO=none; elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	if [ "$$SUDO" = none ]; then echo "$@: the Debian packages $(1) are missing and this user cannot install them:" \
		"install them as root (make system-deps)"; \
	else $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(1); fi; }
system-deps:
	@$(call apt_install,$(TEST_DEPS) $(DOCKER_DEPS))

# Load test of `make serve` (llama.cpp, q4_k_m) against a naive transformers server, side by side (8 clients, 60 s).
bench-serve: gguf
	$(BIN)/python -m bench.serving $(BENCH_ARGS)

# Containers (docs/containers.md). docker-sft / docker-dpo: `make sft` / `make dpo` in the training image on this
# repository, mounted, with every GPU, as you; Hugging Face downloads land in your cache; --ipc=host gives PyTorch's
# processes the shared memory they exchange tensors through. `make docker-sft NPROC=8 DIST=zero3` passes both on.
.PHONY: docker-build docker-sft docker-dpo docker-serve docker-test
HF_CACHE ?= $(HOME)/.cache/huggingface
DOCKER_TRAIN = mkdir -p $(HF_CACHE) && docker run --rm --gpus all --ipc=host -u $$(id -u):$$(id -g) -e DIST -e NPROC \
	-v $(CURDIR):/work -v $(HF_CACHE):/home/medforge/.cache/huggingface medforge-train make

docker-build:
	docker build -f docker/train.Dockerfile -t medforge-train .
	docker build -f docker/serve.Dockerfile -t medforge-serve .

docker-sft docker-dpo: docker-%:
	$(DOCKER_TRAIN) $*

# The serving image on serve.model or MODEL (a GGUF), published on 127.0.0.1:<serve.port or PORT>; clients send
# MEDFORGE_API_KEY as a Bearer token.
docker-serve:
	@test -f "$(SERVE_MODEL)" || { echo "docker-serve: $(SERVE_MODEL) does not exist (make quantize, or MODEL=file.gguf)"; exit 1; }
	docker run --rm -p 127.0.0.1:$(or $(PORT),$(call serve_param,port)):8000 -e MEDFORGE_API_KEY \
		--mount type=bind,src=$(abspath $(SERVE_MODEL)),dst=/models/model.gguf,readonly medforge-serve

# The serving image built on a local Debian base and checked over HTTP (tools/docker_test.py). Needs docker.io and
# debootstrap (installed here when it may), and root or a running engine.
docker-test: gguf
	@$(call apt_install,$(DOCKER_DEPS))
	$(BIN)/python tools/docker_test.py models/gguf/model-q4_k_m.gguf

test: $(STAMP)
	@$(call apt_install,$(TEST_DEPS))
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf data/generated data/prepared models dvclive metrics samples reports plots
