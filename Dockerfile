# The costwatch demo app for docker-compose.yml: a simulated RAG / fine-tuned / hybrid workload
# that records real costwatch metrics, serves them on :8000/metrics for Prometheus and pushes
# OTLP metrics to the collector.  Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY costwatch ./costwatch
# The demo extra brings the openai and anthropic SDKs the demo runs through; the otel extra the
# OpenTelemetry SDK and OTLP exporter it needs when COSTWATCH_OTEL=true.
RUN pip install ".[demo,otel]" \
    && useradd --create-home --uid 10001 costwatch

USER costwatch
WORKDIR /home/costwatch
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=2)"]

# --addr 0.0.0.0: Prometheus scrapes from another container; --duration 0: run until stopped.
CMD ["costwatch", "demo", "--serve", "8000", "--addr", "0.0.0.0", "--duration", "0"]
