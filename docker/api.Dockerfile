# The API service (and the one-shot ingest job) for docker-compose.yml: `mediasearch serve`.
# Build from the repository root: docker build -f docker/api.Dockerfile -t mediasearch-app .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface

WORKDIR /app

# CPU torch first, from PyTorch's CPU index, so installing the project never pulls the CUDA build
# (several GB the container cannot use).
RUN pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu

# Dependencies before sources: editing code then rebuilds only the last layers.
COPY pyproject.toml README.md ./
COPY mediasearch ./mediasearch
RUN pip install . \
    && useradd --create-home --uid 10001 app \
    && mkdir -p /cache/huggingface && chown app /cache/huggingface

USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
CMD ["mediasearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
