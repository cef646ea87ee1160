# gn_det GPU container. The install steps are the README's, line for line
# (tests/test_dockerfile.py checks it), so the tests of one cover the other.
# The torch wheels from PyPI bundle CUDA; run with `docker run --gpus all ...`.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends git libgl1 && rm -rf /var/lib/apt/lists/*
WORKDIR /workspace/gn_det
COPY . .
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install torch==2.14.1 torchvision==0.29.1
RUN pip install -e ".[test]"

ENV GN_DET_DATASETS=/datasets
CMD ["gn-det-train", "--help"]
