FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY flows ./flows
COPY store ./store
COPY messages_es ./messages_es
COPY config ./config
RUN pip install --no-compile . \
    && useradd --system --uid 10001 bot \
    && mkdir -p /app/.data && chown bot /app/.data
USER bot

EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8080\")}/healthz', timeout=2)"
CMD ["python", "-m", "bot", "serve"]
