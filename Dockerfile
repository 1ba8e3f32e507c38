# poseserve serving image: onnxruntime + FastAPI, no torch, non-root.
#
#   docker build -t poseserve .
#   (NVIDIA GPU variant: Dockerfile.gpu)
#
# Built in a venv in a first stage and copied over, so build tools stay out of the image.
# Only the serving package (app/), the torch-free modules it shares with training (crop
# geometry, manifest, session factory, joint tables) and the ONNX artifacts are copied:
# training code, checkpoints and released PyTorch weights never enter the image.

FROM python:3.11-slim AS build
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /srv/poseserve
COPY pyproject.toml README.md poseserve.py ./
COPY models/__init__.py models/transforms.py models/manifest.py models/runtime.py models/keypoints.py models/detection.py models/flip.py models/heatmap_codec.py ./models/
COPY app ./app
# PyAV's own extension modules ship with their debug symbols (32 MB → 7 MB stripped, FFmpeg's
# features unchanged); pip and setuptools are not needed to serve, so the venv drops them.
RUN pip install . && find /opt/venv/lib/python3*/site-packages/av -name '*.so' -exec strip --strip-unneeded {} + \
    && pip uninstall -y -q pip setuptools

FROM python:3.11-slim AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    POSE_MODEL_DIR=/srv/poseserve/models/onnx
WORKDIR /srv/poseserve
COPY --from=build /opt/venv /opt/venv
COPY models/onnx ./models/onnx
# An unprivileged uid with no login and no home: nothing in the image is writable to it.
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["poseserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
