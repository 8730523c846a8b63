# The one image every role runs (docs/architecture.md): the container's command picks the role.
# Base image overridable, e.g. pinned by digest: --build-arg PYTHON_IMAGE=python:3.13-slim@sha256:<digest>
ARG PYTHON_IMAGE=python:3.13-slim

# --- builder: resolve the locked dependencies into /app/.venv (uv comes from the package index) ---
# checkov:skip=CKV_DOCKER_7: the base image is ARG PYTHON_IMAGE (default python:3.13-slim, a version tag); checkov does not expand ARGs
FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Only the app's own dependencies, exactly as locked: no infra or dev group, no project build.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --no-install-project

# --- runtime: the virtualenv, the code, a non-root user; no uv, pip cache or compiler ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH
# /var/lib/taskstack is owned by app so that a fresh named volume mounted there (beat's schedule)
# inherits a writable owner; nothing else in the image is writable at run time.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
 && install -d -o app -g app -m 0750 /var/lib/taskstack
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY alembic.ini ./
COPY alembic ./alembic
COPY app ./app
USER 10001:10001
EXPOSE 8000 5555
# Each role has its own check (the Pulumi program declares them); one image-wide check would be
# wrong for all but one role.
HEALTHCHECK NONE
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
