# syntax=docker/dockerfile:1
# credit-jobs: one image for the operator (`credit-jobs operator`), every CreditJob run (`credit-jobs run …`)
# and the migrations hook (`credit-jobs db upgrade`). Build: docker build -t credit-jobs:0.1.0 .
# The `build` stage turns the package and all its dependencies into wheels (the same `pip install .` CI exercises);
# the `runtime` stage installs only those wheels: no compiler, pip cache or sources in the final image.
# The version label is kept equal to pyproject.toml's version by tests/chart/test_dockerfile.py.

FROM python:3.11-slim-bookworm AS base
LABEL org.opencontainers.image.title="credit-jobs" \
      org.opencontainers.image.description="Exactly-once periodic billing jobs: Kubernetes operator and CronJob runs" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/credit-jobs/credit-jobs"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs ./jobs
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels ".[s3,api,operator]"

FROM base AS runtime
ENV LOG_FORMAT=json
# Install from the wheels only (--no-index): nothing is fetched or compiled here. Then a system user with a
# fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it without resolving a name.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "credit-jobs[s3,api,operator]==0.1.0" \
    && groupadd --system --gid 10001 credit-jobs \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin credit-jobs
USER 10001:10001
WORKDIR /tmp
# 9090: operator /metrics, 8080: Kopf /healthz (the runs and migrations listen on nothing).
EXPOSE 8080 9090
ENTRYPOINT ["credit-jobs"]
CMD ["--help"]
