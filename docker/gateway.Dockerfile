# syntax=docker/dockerfile:1
# The public gateway (uploads, auth, jobs). Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t deepfake-gateway .
# No torch and no local Triton: core + `serve` extra minus nvidia-pytriton (docker/requirements_from_pyproject.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md docker/requirements_from_pyproject.py ./
RUN python requirements_from_pyproject.py --extra serve --exclude nvidia-pytriton > /tmp/requirements.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY deepfake ./deepfake
COPY gateway ./gateway
COPY preprocessor ./preprocessor
COPY inference ./inference
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/python -c "import gateway.app"

FROM ${PYTHON_IMAGE}
# Pango and a font for PDF reports (WeasyPrint, GET /v1/jobs/{id}/report?format=pdf).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /data --create-home app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DEEPFAKE_UPLOAD_DIR=/data/uploads \
    DEEPFAKE_EVIDENCE_DIR=/data/evidence \
    DEEPFAKE_JOB_STORE_URL=sqlite:////data/jobs.sqlite \
    DEEPFAKE_PREPROCESSOR_URL=http://preprocessor:8081
WORKDIR /data
USER 10001
EXPOSE 8080
# Liveness only; orchestrators check readiness (/readyz: the preprocessor answers) themselves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["uvicorn", "--factory", "gateway.app:create_app", "--host", "0.0.0.0", "--port", "8080"]
