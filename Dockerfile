# mcphub: slim, non-root, with uv/uvx and Node/npx so common third-party MCP servers run as configured.
FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm tini \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --no-cache-dir uv

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mcphub ./mcphub
COPY servers ./servers
RUN pip install --no-cache-dir . && rm -rf /root/.cache

RUN useradd --create-home --uid 10001 mcphub
USER mcphub
WORKDIR /home/mcphub
ENV PYTHONUNBUFFERED=1

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

# Binding 0.0.0.0 needs a credential: pass MCPHUB_API_KEY (or mount a config with auth.api_keys).
# Mount your config at /home/mcphub/mcphub.yaml to replace the packaged default.
ENTRYPOINT ["tini", "--", "mcphub"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
