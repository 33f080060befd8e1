"""`tuner.retune: on_change`: the last search's best hyper-parameters instead of a new search.

A new span of the same data re-runs the Tuner under TFX's cache (its input,
the transformed examples, changed), although nothing it searches over did. With
`on_change`, the pipeline looks in this pipeline's ML Metadata for the newest
Tuner run with the same *tuning key* and, when there is one, imports its
`best_hyperparameters` artifact (TFX's Importer with `reimport=False`, so the
Trainer's input is that very artifact and lineage leads to the Tuner run that
found it) instead of running the Tuner. The key covers what a search depends on
apart from the rows: the search space and model code (the `models/` sources,
what TFX fingerprints for the module file), the Tuner's settings, the batch size
and seed, the feature spec and the schema file. Change any of them and the next
run searches again.

Only stores this process can open are looked in (local SQLite, the local and
Beam runners); a pipeline compiled for Vertex AI always runs its Tuner.
"""

import glob
import hashlib
import json
import os
from typing import Dict, Optional

from ml_metadata.proto import metadata_store_pb2

import models
from contract.config import PipelineConfig, is_remote
from pipeline.metadata import OUTPUT_EVENTS, open_metadata

TUNER_ID = "Tuner"
OUTPUT_KEY = "best_hyperparameters"
HPARAMS_FILE = "best_hyperparameters.txt"  # what TFX's Tuner writes into that artifact
KEY_PROPERTY = "tuning_key"  # in the Tuner's custom_config: MLMD keeps it with the execution
IMPORTER_ID = "hyperparameters_importer"
MODELS_DIR = os.path.dirname(models.__file__)
DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)


def tuning_key(config: PipelineConfig, custom_config: Dict) -> str:
    """SHA-256 of everything a search depends on except the examples themselves."""
    digest = hashlib.sha256()
    digest.update(json.dumps(custom_config, sort_keys=True).encode("utf-8"))
    if os.path.isfile(config.schema_file):
        with open(config.schema_file, "rb") as f:
            digest.update(f.read())
    else:  # A path inside the Vertex AI image or on GCS: only its name is known here (and reuse is off there).
        digest.update(config.schema_file.encode("utf-8"))
    for path in sorted(glob.glob(os.path.join(MODELS_DIR, "**", "*.py"), recursive=True)):
        digest.update(os.path.relpath(path, MODELS_DIR).encode("utf-8"))
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def last_tuned(config: PipelineConfig, key: str) -> Optional[metadata_store_pb2.Artifact]:
    """The newest best_hyperparameters artifact of this pipeline's Tuner runs with `key`; None if none."""
    path = config.metadata_path
    if is_remote(path) or not os.path.exists(path):
        return None
    store = open_metadata(path)
    context = store.get_context_by_type_and_name("node", f"{config.pipeline_name}.{TUNER_ID}")
    if context is None:
        return None
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: -e.id):
        if execution.last_known_state not in DONE:
            continue
        custom = execution.custom_properties.get("custom_config")
        try:
            if json.loads(custom.string_value if custom else "{}").get(KEY_PROPERTY) != key:
                continue
        except ValueError:
            continue
        ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
               if e.type in OUTPUT_EVENTS and e.path.steps and e.path.steps[0].key == OUTPUT_KEY]
        for artifact in store.get_artifacts_by_id(ids):
            if os.path.exists(os.path.join(artifact.uri, HPARAMS_FILE)):
                return artifact
    return None
