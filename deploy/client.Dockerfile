# syntax=docker/dockerfile:1
# The digitq client, also used for Flower: Celery and Typer, no TensorFlow.
#   docker build -f deploy/client.Dockerfile -t digitq-client:0.1.0 .
FROM python:3.11.13-slim-bookworm

# Same owner as in the worker images, so the client can read and write the shared volume.
ARG DIGITQ_UID=1000

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DIGITQ_HOME=/digitq

WORKDIR /opt/digitq
COPY pyproject.toml README.md ./
COPY common/ common/
COPY client/ client/
# The distribution always contains digitq.worker (pyproject lists it); without an extra that
# brings no TensorFlow, and the client never imports it.
COPY worker/ worker/

RUN pip install --no-cache-dir . "flower==2.2.0"

RUN set -eux; \
    useradd --create-home --uid "${DIGITQ_UID}" --user-group --shell /usr/sbin/nologin digitq; \
    mkdir -p /digitq; \
    chown digitq:digitq /digitq

WORKDIR /digitq
USER digitq

CMD ["digitq", "--help"]
