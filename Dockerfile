# syntax=docker/dockerfile:1
# Switchboard: webhook delivery service. Build: docker build -t switchboard .

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir service consumers \
    && touch service/__init__.py consumers/__init__.py \
    && pip install . \
    && pip uninstall --yes switchboard
COPY service ./service
COPY consumers ./consumers
# Byte-compiled at build time: the root filesystem is read-only at run time.
RUN pip install --no-deps . && python -m compileall -q /opt/venv

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="switchboard" \
      org.opencontainers.image.description="Webhook delivery for an AI voice-agent platform: Kafka events to signed HTTP deliveries" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/switchboard"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin switchboard
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["switchboard"]
