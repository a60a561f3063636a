# Persona Video with every heavy backend: XTTS v2, GFPGAN and SadTalker (a pinned checkout in
# its own environment). For a GPU machine or a Docker Space; see "Deploy on a GPU" in README.md.
#   docker build -t persona-video .
#   docker run --gpus all -p 7860:7860 -v persona-data:/data -e COQUI_TOS_AGREED=1 persona-video
# At its first start the app fetches the missing weights into /data/checkpoints (progress in the
# log and on the page) and answers its health check meanwhile; later starts find them there.
# Base: the official Python image (tag published in docker-library/official-images, library/python).
# torch's wheels bring their own CUDA libraries; the NVIDIA container toolkit adds the driver.
FROM python:3.11.14-slim-bookworm

ARG SADTALKER_COMMIT=cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HF_HOME=/data/huggingface \
    PERSONA_VIDEO_CHECKPOINTS=/data/checkpoints \
    PERSONA_VIDEO_OUTPUTS=/data/outputs \
    PERSONA_VIDEO_FETCH_ON_START="xtts sadtalker gfpgan" \
    PERSONA_VIDEO_SADTALKER_DIR=/opt/sadtalker \
    PERSONA_VIDEO_SADTALKER_PYTHON=/opt/sadtalker-venv/bin/python

# ffmpeg: SadTalker joins audio and video with it; git: its checkout; libgl1 and libglib2.0-0:
# OpenCV and MediaPipe. Versions follow the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates ffmpeg git libgl1 libglib2.0-0 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# SadTalker at one commit, without its history, demo media or download scripts' targets.
RUN git init --quiet /opt/sadtalker \
    && git -C /opt/sadtalker fetch --quiet --depth 1 https://github.com/OpenTalker/SadTalker.git "$SADTALKER_COMMIT" \
    && git -C /opt/sadtalker checkout --quiet --detach FETCH_HEAD \
    && rm -rf /opt/sadtalker/.git /opt/sadtalker/docs /opt/sadtalker/examples

# SadTalker's own environment: its pins clash with ours (requirements-sadtalker.txt says why).
COPY requirements-sadtalker.txt /tmp/requirements-sadtalker.txt
RUN python -m venv /opt/sadtalker-venv \
    && /opt/sadtalker-venv/bin/pip install --no-cache-dir -r /tmp/requirements-sadtalker.txt \
    && /opt/sadtalker-venv/bin/pip install --no-cache-dir --no-deps gfpgan==1.3.8 basicsr-fixed==1.4.2

# The app's environment: core and heavy requirements in one pip command (numpy stays below 2).
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt requirements-gpu.txt ./
RUN pip install --no-cache-dir -r requirements.txt -r requirements-gpu.txt

# Spaces run the container as uid 1000; /data is where a Space's persistent storage is mounted;
# /app/outputs is the user's too, so a volume mounted there (docker-compose.yml) is writable.
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data /app/outputs \
    && chown user:user /data /app/outputs
COPY --chown=user:user . .
USER 1000:1000
VOLUME /data

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/api/health', timeout=4)"]
CMD ["python", "app.py"]
