# gn_det GPU container.
#
#   docker build -t gn_det .                                   # CUDA runtime base (default below)
#   docker build --build-arg BASE=debian:bookworm-slim -t gn_det .
#   docker run --gpus all --shm-size 8g -v $PWD/output:/output -v /data:/datasets:ro gn_det \
#       --config-file configs/mask_rcnn_R_50_FPN_gn_2x.yaml
#
# BASE: torch==2.14.1 from PyPI is built for CUDA 13.0 (torch.version.cuda) and bundles its CUDA
# libraries as pip packages, so any glibc >= 2.28 Debian/Ubuntu base with apt works on a GPU with the
# host's driver (NVIDIA Container Toolkit); the CUDA runtime image adds the matching system libraries.
# tools/build_container_local.sh builds it with podman from a debootstrapped Debian base.
#
# The install steps are the README's (tests/test_dockerfile.py checks it): the torch pins line for
# line, then the project's dependencies read from pyproject.toml alone, both before the source is
# copied, so a code change rebuilds only the last layers, never the torch one.
ARG BASE=nvidia/cuda:13.0.0-runtime-ubuntu24.04
FROM ${BASE}

# The index pip uses while building (a mirror, a proxy); not kept in the image. Behind a proxy that
# re-signs TLS, pass its CA bundle as a build secret (--secret id=pip_cert,src=/path/ca.crt); it is
# mounted for the pip steps only and never stored in a layer.
ARG PIP_INDEX_URL=https://pypi.org/simple
# Owner of the files the container writes into /output: match your host user (--build-arg USER_UID=$(id -u)).
ARG USER_UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /workspace/gn_det

# Non-root user; /output is the output volume (the configs' relative OUTPUT_DIR "output/..." lands
# there through the link, or set OUTPUT_DIR /output/NAME); /cache holds the synthetic sets and the
# torch/matplotlib caches. Both are world-writable so that `docker run --user UID:GID` works too.
RUN existing="$(getent passwd "$USER_UID" | cut -d: -f1)" \
    && if [ -n "$existing" ]; then userdel --remove "$existing" 2>/dev/null || userdel "$existing"; fi \
    && useradd --create-home --uid "$USER_UID" --shell /bin/bash gn \
    && mkdir -p /output /datasets /cache \
    && chown gn /output /cache && chmod 1777 /output /cache

# Dependency layers: the torch pins first (the largest layer, changed only with the pins), then what
# pyproject.toml lists for ".[test]"; only pyproject.toml and its reader are copied for them.
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml tools/pyproject_requirements.py /tmp/gn_det_deps/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 /tmp/gn_det_deps/pyproject_requirements.py /tmp/gn_det_deps/pyproject.toml --extras test \
        > /tmp/gn_det_deps/requirements.txt \
    && pip install -r /tmp/gn_det_deps/requirements.txt \
    && rm -rf /tmp/gn_det_deps

# The source (.dockerignore keeps .venv, outputs, datasets and .git out), installed without deps.
COPY . .
RUN pip install --no-deps --no-build-isolation -e ".[test]" \
    && pip check \
    && python3 -m compileall -q gn_det \
    && ln -s /output /workspace/gn_det/output

ENV GN_DET_DATASETS=/datasets \
    GN_DET_CACHE=/cache/gn_det \
    XDG_CACHE_HOME=/cache \
    TORCH_HOME=/cache/torch \
    MPLCONFIGDIR=/cache/matplotlib
VOLUME ["/output"]
USER gn

ENTRYPOINT ["gn-det-train"]
CMD ["--help"]
