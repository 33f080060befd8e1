# This project's image. Vertex AI Pipelines runs every step in it (gcp.image) and Dataflow starts its
# workers from it (--sdk_container_image), so both run the pinned stack and the installed project:
# every executor (components/), what they call (validation/, edge/, models/, training/, contract/) and
# the command lines (cli/) with what they run (runners/, serving/, monitoring/, batch/, reports/, fleet/).
# tests/image.py rebuilds this file's COPY and install steps into a temporary directory and imports every
# executor the compiled pipeline names.
#
#   docker build -t REGISTRY/taxi:TAG . && docker push REGISTRY/taxi:TAG
#   tfx-edge pipeline compile --set gcp.image=REGISTRY/taxi:TAG ...

# Must equal apache-beam in requirements.txt: Dataflow's worker boot and the SDK go together.
ARG BEAM_VERSION=2.59.0
FROM apache/beam_python3.10_sdk:${BEAM_VERSION} AS beam

FROM tensorflow/tfx:1.16.0

# requirements.lock was resolved on Python 3.10: fail here, not halfway through pip.
RUN python -c "import sys; assert sys.version_info[:2] == (3, 10), sys.version"

# tflite-support (requirements.txt) loads libusb-1.0 at import time.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libusb-1.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /pipeline

# Requirements before code, so editing code does not redo the slow install layer.
COPY requirements.txt requirements.lock ./
RUN python -m pip install --no-cache-dir -r requirements.txt -c requirements.lock

COPY --from=beam /opt/apache/beam /opt/apache/beam
# Dataflow's worker harness; Vertex AI steps name their own command and bypass it.
ENTRYPOINT ["/opt/apache/beam/boot"]

# The project: one package per lifecycle stage (pyproject.toml lists them), installed with its data
# files. The source stays in /pipeline too: kubeflow.image_project_dir, where steps read schema_file.
COPY pyproject.toml README.md ./
COPY contract/ contract/
COPY formats/ formats/
COPY schemas/ schemas/
COPY models/ models/
COPY training/ training/
COPY validation/ validation/
COPY edge/ edge/
COPY components/ components/
COPY pipeline/ pipeline/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY batch/ batch/
COPY deploy/ deploy/
COPY reports/ reports/
COPY fleet/ fleet/
COPY runners/ runners/
COPY cli/ cli/
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation . \
 && python -c "import components.anomaly_gate, components.edge_export, components.serving_check, \
components.serving_pusher, cli.serving"

# TFX 1.16 needs Keras 2 (tf_keras) in every step and every Dataflow worker.
ENV TF_USE_LEGACY_KERAS=1
