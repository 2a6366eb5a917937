# One image for every agentmesh service; the container command picks the service (python -m <module>).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 \
    AGENTMESH_HOST=0.0.0.0 AGENTMESH_STATE_DIR=/var/lib/agentmesh

WORKDIR /app
# The CPU build of torch first, so that sentence-transformers does not pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY gen ./gen
COPY mesh ./mesh
COPY connectors ./connectors
COPY planner ./planner
COPY executor ./executor
COPY memory ./memory
COPY gateway ./gateway
RUN pip install . && useradd --system --home /var/lib/agentmesh agentmesh && \
    mkdir -p /var/lib/agentmesh && chown agentmesh /var/lib/agentmesh
USER agentmesh
EXPOSE 50051 9464
CMD ["python", "-m", "gateway.server"]
