# syntax=docker/dockerfile:1
# One image, two entrypoints: `gputopo-agent` (the default, for the DaemonSet) and
# `gputopo-scheduler` (the Deployment sets `command: ["gputopo-scheduler"]`).
#
# The base is pinned by tag and by digest; bump both together (docs/deployment.md says how).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# -- builder: the project's wheel plus wheels for all its dependencies ------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent/ agent/
COPY scheduler/ scheduler/
COPY mocks/ mocks/
COPY gputopo/ gputopo/
RUN pip wheel --wheel-dir /wheels .

# -- final: the package installed from its wheel, nothing else --------------------------------
FROM ${PYTHON_IMAGE}
ARG GPUTOPO_UID=65532
LABEL org.opencontainers.image.title="gputopo" \
      org.opencontainers.image.description="GPU topology discovery agent and topology-aware scheduler for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# The wheels are bind-mounted from the builder, so they never become a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/gputopo-*.whl \
    && gputopo-agent --help >/dev/null \
    && gputopo-scheduler --help >/dev/null
# A numeric, non-root user: Kubernetes can check runAsNonRoot only against a numeric UID.
USER ${GPUTOPO_UID}:${GPUTOPO_UID}
EXPOSE 9465
ENTRYPOINT ["gputopo-agent"]
CMD ["run"]
