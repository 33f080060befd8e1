# This project's image. Vertex AI Pipelines runs every step in it (gcp.image) and
# Dataflow starts its workers from it (--sdk_container_image), so both run the
# pinned stack and can import pipeline/, components/ and models/.
#
#   docker build -t REGISTRY/taxi:TAG . && docker push REGISTRY/taxi:TAG
#   python -m runners compile --set gcp.image=REGISTRY/taxi:TAG ...

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

COPY pipeline/ pipeline/
COPY components/ components/
COPY schemas/ schemas/
COPY models/ models/
COPY runners/ runners/
# Batch scoring on Dataflow (`python -m serving score --runner dataflow`): its workers run serving/batch.py,
# which reads with validation/ and runs edge models with edge/ (the AnomalyGate step imports validation/ too).
COPY serving/ serving/
COPY validation/ validation/
COPY edge/ edge/

# /pipeline is kubeflow.image_project_dir in pipeline/config.py: keep them equal.
ENV PYTHONPATH=/pipeline \
    TF_USE_LEGACY_KERAS=1
