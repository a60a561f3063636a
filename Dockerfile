# Persona Video with the heavy GPU backends (XTTS v2, GFPGAN; SadTalker when mounted).
# Build:  docker build -t persona-video .
# Run:    docker run --gpus all -p 7860:7860 -v "$PWD/checkpoints:/app/checkpoints:ro" persona-video
# torch brings its own CUDA libraries (pip wheels); the base image supplies the
# CUDA-runtime environment the NVIDIA container toolkit expects.
FROM nvidia/cuda:13.0.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    PERSONA_VIDEO_CHECKPOINTS=/app/checkpoints

# Python 3.11 (the version the pinned wheels are tested with) and the shared
# libraries OpenCV and MediaPipe load. Versions follow the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates \
        libgl1 libglib2.0-0 libsm6 libxext6 libxrender1 libgomp1 libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

# /app/outputs exists and is the user's, so a volume mounted there (docker-compose.yml) is writable
RUN useradd --create-home --uid 1000 user \
    && python3.11 -m venv /opt/venv \
    && mkdir -p /app/outputs \
    && chown -R user:user /opt/venv /app/outputs
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY --chown=user:user requirements.txt requirements-gpu.txt ./
USER 1000:1000
RUN pip install --no-cache-dir -r requirements.txt -r requirements-gpu.txt

COPY --chown=user:user . .

EXPOSE 7860
CMD ["python", "app.py"]
