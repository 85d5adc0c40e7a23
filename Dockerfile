# Image for the API, workers, beat and the ops CLI (docker-compose.yml). Not used by `make demo`/`make test`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BCL_DATA_DIR=/var/lib/paratro/bitcoinlib
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline pipeline
COPY chains chains
COPY workers workers
COPY api api
COPY paratro paratro
COPY signer signer
COPY devnet devnet
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/paratro paratro \
    && mkdir -p /var/lib/paratro && chown paratro /var/lib/paratro
USER paratro
ENTRYPOINT ["paratro"]
CMD ["worker"]
