# syntax=docker/dockerfile:1
# The serving image: `rasa run` with nlu-bert's components, and the action server (the same image with
# another command, see docker-compose.yml). The base package only: no torch, no transformers. A model
# trained with the default inference backends is served by onnxruntime and nlu-bert's native kernel.
# One compute thread per process (OMP_NUM_THREADS, TF_*_PARALLELISM_THREADS): scale with processes, one or
# two per core, not with threads (docs/deploy.md).
#
#   docker build -f deploy/serve.Dockerfile -t nlu-bert-serve .          (from the repository root)
ARG PYTHON_IMAGE=python:3.10-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gcc + OpenMP build nlu-bert's native int8 kernel (optional: the install goes on without it)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY nlu_bert ./nlu_bert
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install -c constraints.txt "pip<25" "setuptools<70.4" wheel \
    && /opt/venv/bin/pip install -c constraints.txt . \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1001 --shell /usr/sbin/nologin rasa
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# the sample assistant's actions, channels and endpoints (replace with your bot's own)
COPY rasa_project ./rasa_project
RUN mkdir -p /app/models && chown rasa /app/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    TF_CPP_MIN_LOG_LEVEL=3 \
    OMP_NUM_THREADS=1 \
    TF_INTRA_OP_PARALLELISM_THREADS=1 \
    TF_INTER_OP_PARALLELISM_THREADS=1 \
    RASA_TELEMETRY_ENABLED=false \
    SQLALCHEMY_SILENCE_UBER_WARNING=1 \
    MALLOC_MMAP_THRESHOLD_=131072 \
    MALLOC_TRIM_THRESHOLD_=131072
USER 1001
EXPOSE 5005 5055
ENTRYPOINT ["rasa"]
CMD ["run", "--enable-api", "--model", "/app/models", "--endpoints", "rasa_project/endpoints.production.yml", "--credentials", "rasa_project/credentials.yml", "--port", "5005"]
