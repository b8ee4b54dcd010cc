# CPU image by default; the GPU variant in docker-compose.yml builds with
# TORCH_INDEX=https://pypi.org/simple, whose torch wheels carry CUDA.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CLIPSEARCH_HOST=0.0.0.0 \
    CLIPSEARCH_PORT=8000 \
    CLIPSEARCH_STORE__DATA_DIR=/data \
    HF_HOME=/cache/huggingface

RUN useradd --create-home --uid 1000 clipsearch \
    && mkdir -p /data /cache \
    && chown clipsearch:clipsearch /data /cache

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY models ./models
COPY index ./index
COPY service ./service
COPY client ./client
COPY clipsearch ./clipsearch
RUN pip install .

USER clipsearch
VOLUME ["/data", "/cache"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["clipsearch", "serve"]
