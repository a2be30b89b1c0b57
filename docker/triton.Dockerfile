# syntax=docker/dockerfile:1
# NVIDIA Triton for the GPU path: the NGC image as is, with our serving flags and a health check.
# The model repository is NOT baked in: mount it at /models (Compose volume, Kubernetes volume) or point
# --model-repository at an s3:// URL, so a new model version needs no new image.
#   docker build -f docker/triton.Dockerfile -t deepfake-triton .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3
FROM ${TRITON_IMAGE}
EXPOSE 8000 8001 8002
# Ready = server up and every model in the repository loaded (--strict-readiness). python3 ships in the
# -py3 image (its Python backend needs it); curl is not relied upon.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=poll", "--repository-poll-secs=60", \
     "--strict-readiness=true", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", \
     "--allow-metrics=true", "--allow-gpu-metrics=true"]
