# syntax=docker/dockerfile:1
# Two images, one per deployable (docs/deployment.md):
#   --target agent      the DaemonSet's: `gputopo-agent`, only the agent's dependencies (no numpy)
#   --target scheduler  the Deployment's: `gputopo-scheduler`, with the `scheduler` extra
# Without --target, the last stage, `agent`, is built.
#
# The base is pinned by tag and by digest; bump both together (docs/deployment.md says how).
# The suite builds this file on a local Debian base instead (--build-arg PYTHON_IMAGE=...), so
# everything here works on the official image and on Debian's python3 alike: the packages go
# into a virtualenv, never into the system Python (PEP 668).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# -- venv: a virtualenv with the base dependencies, read from pyproject.toml -----------------
# Only pyproject.toml is copied first, so a change of source reuses the dependency layers.
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -m venv /opt/gputopo \
    && python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/agent.txt \
    && /opt/gputopo/bin/pip install --requirement /tmp/agent.txt

# -- venv-agent: the project on top, then pip and setuptools out of the virtualenv ------------
FROM venv AS venv-agent
# The context is what .dockerignore lets through: the package and its metadata files, nothing else.
COPY . ./
RUN /opt/gputopo/bin/pip install --no-deps . \
    && /opt/gputopo/bin/pip uninstall --yes pip setuptools \
    && /opt/gputopo/bin/gputopo-agent --version

# -- venv-scheduler: the same plus the `scheduler` extra ---------------------------------------
FROM venv AS venv-scheduler
RUN python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["scheduler"]))' > /tmp/scheduler.txt \
    && /opt/gputopo/bin/pip install --requirement /tmp/scheduler.txt
# The context is what .dockerignore lets through: the package and its metadata files, nothing else.
COPY . ./
RUN /opt/gputopo/bin/pip install --no-deps '.[scheduler]' \
    && /opt/gputopo/bin/pip uninstall --yes pip setuptools \
    && /opt/gputopo/bin/gputopo-scheduler --version

# -- runtime: what both images share ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG GPUTOPO_UID=65532
LABEL org.opencontainers.image.title="gputopo" \
      org.opencontainers.image.description="GPU topology discovery agent and topology-aware scheduler for Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/gputopo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric, non-root user: Kubernetes can check runAsNonRoot only against a numeric UID.
USER ${GPUTOPO_UID}:${GPUTOPO_UID}

# -- scheduler: `gputopo-scheduler` (the Deployment runs `gputopo-scheduler run`) --------------
FROM runtime AS scheduler
COPY --from=venv-scheduler /opt/gputopo /opt/gputopo
ENTRYPOINT ["gputopo-scheduler"]
CMD ["run"]

# -- agent: `gputopo-agent`, the default target ------------------------------------------------
FROM runtime AS agent
COPY --from=venv-agent /opt/gputopo /opt/gputopo
EXPOSE 9465
ENTRYPOINT ["gputopo-agent"]
CMD ["run"]
