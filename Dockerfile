# One image for every Closeloop service, relay and one-off job.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY demo demo
# Editable: Alembic reads services/<name>/migrations from this source tree (they are not
# packages, so a regular install would leave them out). Installs the `closeloop` script.
RUN pip install -e .

# Development signing keys are mounted here by docker-compose; production passes
# CLOSELOOP_JWT_PUBLIC_KEY(_FILE) instead.
ENV CLOSELOOP_KEYS_DIR=/app/.keys
EXPOSE 8001 8002 8003 8004 8005
CMD ["closeloop", "--help"]
