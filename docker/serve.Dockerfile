# The serving image: `python -m serve` (llama.cpp's OpenAI-compatible API) on a GGUF mounted at /models/model.gguf,
# CPU only, non-root; the key comes from MEDFORGE_API_KEY. `make docker-serve` runs it, `make docker-test` checks it.
# BASE_IMAGE is a tag, not a digest: no registry was reachable here to check one. Debian bookworm (or a derivative):
# its Python 3.11 is the one requirements.lock was resolved on.
ARG BASE_IMAGE=debian:bookworm-slim

# Builder: the serving subset of the lock, hashed, into /opt/venv; llama-cpp-python compiles here with the Makefile's
# portable LLAMA_CMAKE_ARGS (the default -march=native build crashes on quantized models on some CPUs).
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv cmake g++ make \
    && rm -rf /var/lib/apt/lists/*
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF"
COPY requirements-serve.lock /tmp/
RUN python3 -m venv /opt/venv \
    && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes \
       -r /tmp/requirements-serve.lock

# Final stage: Python, OpenMP (llama.cpp's threads) and the builder's venv; no compilers.
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 medforge
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY serve/ serve/
COPY medforge/__init__.py medforge/params.py medforge/tools.py medforge/
COPY params.yaml .
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python", "-m", "serve"]
CMD ["--model", "/models/model.gguf", "--host", "0.0.0.0", "--port", "8000"]
