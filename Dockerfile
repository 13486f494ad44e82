# vidscan gRPC server image.
#
#   docker build -t vidscan .
#   docker run --rm -p 50051:50051 -e VIDSCAN_JWT_SECRET=... vidscan
#
# All configuration is environment variables (VIDSCAN_*, DATABASE_URL, REDIS_URL,
# S3_*, AWS_*, TRITON_URL; see server/config.py). With none of the backing services
# set, the server runs on the embedded defaults under VIDSCAN_DATA_DIR (SQLite, local
# object files, in-memory sessions); mount a volume there to keep them.
#
# scripts/dockercheck.sh replays the build stage natively and runs the result, so the
# build stage keeps to what it can replay: RUN lines use only relative paths (under
# WORKDIR) and $VIRTUAL_ENV, never another absolute path.

# Both stages must use the same base image: the venv's python is a symlink to the
# base image's interpreter (/usr/local/bin/python3.11), and its scripts' shebangs
# name /opt/venv, so the venv lives at the same path in both stages.
FROM python:3.11-slim-bookworm AS build

ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:$PATH
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Dependencies first, from pyproject.toml's list and the pinned constraints, so that a
# source change does not reinstall them.
COPY pyproject.toml constraints.txt ./
RUN python -m venv "$VIRTUAL_ENV"
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt
RUN pip install -c constraints.txt -r requirements.txt

# Stubs are generated here from protos/ (gen/ is never in the build context), then the
# project is installed as a regular wheel: the runtime stage has no source tree.
COPY protos/ protos/
COPY scripts/proto.sh scripts/proto.sh
COPY server/ server/
COPY clients/ clients/
COPY README.md ./
RUN PYTHON=python bash scripts/proto.sh
RUN pip install -c constraints.txt .
RUN pip check

FROM python:3.11-slim-bookworm AS runtime

ENV VIRTUAL_ENV=/opt/venv
ENV PATH=/opt/venv/bin:$PATH
ENV PYTHONUNBUFFERED=1
ENV PYTHONDONTWRITEBYTECODE=1
ENV VIDSCAN_DATA_DIR=/var/lib/vidscan
ENV VIDSCAN_GRPC_LISTEN=0.0.0.0:50051

RUN groupadd --system --gid 10001 vidscan \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vidscan --no-create-home --shell /usr/sbin/nologin vidscan \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/vidscan

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/vidscan
EXPOSE 50051

# grpc.health.v1 Check on the overall service (""), on the port of VIDSCAN_GRPC_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as pb, health_pb2_grpc as pbg; port = os.environ.get('VIDSCAN_GRPC_LISTEN', '0.0.0.0:50051').rpartition(':')[2]; channel = grpc.insecure_channel(f'127.0.0.1:{port}'); reply = pbg.HealthStub(channel).Check(pb.HealthCheckRequest(service=''), timeout=3); sys.exit(0 if reply.status == pb.HealthCheckResponse.SERVING else 1)"]

ENTRYPOINT ["vidscan-server"]
CMD ["serve"]
