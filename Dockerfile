# winnow on a CUDA machine: the project with its `gpu` extra (FAISS on GPU), `winnow` as entry point.
# Also usable as the SDK container image of a Beam runner's GPU workers (see docs/beam.md).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/winnow
ENV PATH=/opt/winnow/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY winnow ./winnow
# faiss-cpu and faiss-gpu provide the same module: keep only the GPU build.
RUN pip install --upgrade pip \
 && pip install '.[gpu,beam]' \
 && pip uninstall -y faiss-cpu

WORKDIR /work
ENTRYPOINT ["winnow"]
CMD ["--help"]
