# The training image: CUDA and the project's venv, run on the repository mounted at /work (`make docker-sft`,
# `make docker-dpo`, or `make sft` in a shell inside).
# CUDA 13.0: torch 2.13.0 from PyPI, as the Makefile installs it, is the CUDA 13.0 build (it brings its own CUDA
# libraries); a 12.8 base would let the NVIDIA runtime start it on drivers too old for it (CUDA 13 needs >= 580).
# Ubuntu 24.04's Python is 3.12 while requirements.lock was resolved on 3.11: every release it pins has a 3.12 wheel or
# is source-only, and no dependency marker differs between the two (checked against PyPI, 2026-11-23).
ARG BASE_IMAGE=nvidia/cuda:13.0.3-cudnn-runtime-ubuntu24.04@sha256:14f6d08d1cd4a96effbfe3101d0b56326f552c199d05e4979ee0bd616df5811b
FROM ${BASE_IMAGE}

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python3-dev cmake g++ make git \
    && rm -rf /var/lib/apt/lists/*

# The Makefile's setup rule ($(STAMP)) plus its GPU extras, into /opt/venv: torch by version (its CUDA build from PyPI),
# the hashed lock with llama-cpp-python compiled with the portable LLAMA_CMAKE_ARGS, the GPU lock (DeepSpeed's ops
# compile on first use), pip check; then llama.cpp's converter from the same hashed source (LLAMA_CONVERTER).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
COPY requirements.in requirements.lock requirements-gpu.lock /tmp/lock/
WORKDIR /tmp/lock
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir "$(grep -E '^torch==' requirements.in)" \
    && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes \
       -r requirements.lock \
    && DS_BUILD_OPS=0 /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes -r requirements-gpu.lock \
    && /opt/venv/bin/pip check
RUN grep '^llama_cpp_python==' requirements.lock > llama-cpp.txt \
    && /opt/venv/bin/pip download -q --no-cache-dir --no-deps --no-binary llama-cpp-python --require-hashes \
       -r llama-cpp.txt -d src \
    && tar -xzf src/llama_cpp_python-*.tar.gz -C /opt/venv --strip-components=2 --wildcards \
       '*/vendor/llama.cpp/convert_hf_to_gguf.py' '*/vendor/llama.cpp/conversion' '*/vendor/llama.cpp/gguf-py' \
       '*/vendor/llama.cpp/models/ggml-vocab-qwen2.gguf' '*/vendor/llama.cpp/models/ggml-vocab-llama-bpe.gguf' \
       '*/vendor/llama.cpp/models/templates' \
    && rm -rf /tmp/lock

# Any uid can run it (make docker-sft passes yours): HOME is writable by all, and USER answers getpass.getuser() (DVC,
# torch's caches) for a uid without a passwd entry. In the container `make <target>` uses /opt/venv as it is:
# MAKEFLAGS points the Makefile's VENV at it, and an empty STAMP drops the setup prerequisite, so make never tries to
# rebuild a venv (GNU make ignores a rule without targets).
RUN useradd --uid 10001 --home-dir /home/medforge --create-home medforge && chmod 1777 /home/medforge
ENV PATH=/opt/venv/bin:$PATH HOME=/home/medforge USER=medforge MAKEFLAGS="VENV=/opt/venv STAMP="
USER 10001:10001
WORKDIR /work
CMD ["bash"]
