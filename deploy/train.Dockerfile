# syntax=docker/dockerfile:1
# The training image: `rasa train` with nlu-bert[train] (torch, transformers). It writes the model to
# /app/models, the volume the serving containers read (docker-compose.yml, service `train`).
#
#   docker build -f deploy/train.Dockerfile -t nlu-bert-train .                     (CPU torch)
#   docker build -f deploy/train.Dockerfile --build-arg TORCH_INDEX_URL= -t nlu-bert-train:cuda .
#   docker build -f deploy/train.Dockerfile --build-arg BAKE_MODELS=1 --build-arg HF_ENDPOINT=https://hf-mirror.com -t nlu-bert-train .
#
# BAKE_MODELS=1 downloads the hub models config.yml names into the image's HF cache at build time
# (deploy/prefetch_models.py), so training needs no hub access: run it with HF_HUB_OFFLINE=1.
ARG PYTHON_IMAGE=python:3.10-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BAKE_MODELS=0
ARG HF_ENDPOINT=https://huggingface.co
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1001 --shell /usr/sbin/nologin rasa
WORKDIR /app
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY nlu_bert ./nlu_bert
# the CPU wheels of torch (no CUDA libraries) unless TORCH_INDEX_URL is emptied
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt "pip<25" "setuptools<70.4" wheel \
    && if [ -n "$TORCH_INDEX_URL" ]; then /opt/venv/bin/pip install -c constraints.txt --index-url "$TORCH_INDEX_URL" torch; fi \
    && /opt/venv/bin/pip install -c constraints.txt ".[train]" \
    && /opt/venv/bin/pip check
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/opt/hf \
    TOKENIZERS_PARALLELISM=false \
    TF_CPP_MIN_LOG_LEVEL=3 \
    RASA_TELEMETRY_ENABLED=false
COPY config.yml config.offline.yml domain.yml ./
COPY data ./data
COPY rasa_project ./rasa_project
COPY deploy/prefetch_models.py ./deploy/prefetch_models.py
RUN mkdir -p /opt/hf /app/models \
    && if [ "$BAKE_MODELS" = "1" ]; then HF_ENDPOINT="$HF_ENDPOINT" python deploy/prefetch_models.py config.yml; fi \
    && chown -R rasa /opt/hf /app/models
USER 1001
ENTRYPOINT ["rasa"]
CMD ["train", "--config", "config.yml", "--domain", "domain.yml", "--data", "data/nlu.yml", "data/stories.yml", "data/rules.yml", "--out", "/app/models"]
