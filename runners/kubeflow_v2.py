"""Compile the pipeline for Vertex AI Pipelines / KFP v2, and submit it to Vertex AI.

    python -m runners compile --runner kubeflow_v2 --out pipeline.json
    python -m runners submit --runner kubeflow_v2 --param 'train_args={"num_steps": 5000}'

The output is a PipelineJob JSON (`pipelineSpec` + `runtimeConfig`, schema 2.1).
Every step runs in `gcp.image` (./Dockerfile), so whatever a step reads or
writes must be reachable from there: pipeline_root, serving_dir and
data.input_base are gs:// paths, and repository files (schema_file) are read
from the image's copy under `kubeflow.image_project_dir`. Compiling packages
models/ into wheels under `<pipeline_root>/_wheels` (so it needs write access to
that bucket); the steps install them, so the code that runs is the code that was
compiled, however old the image.

Trainer's train_args and eval_args become pipeline parameters of the same names
(TrainArgs/EvalArgs as JSON, defaults from training.*), so one compiled pipeline
can be re-run with other step counts from the Vertex AI console or `--param`.
"""

import dataclasses
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from contract.config import REPO_ROOT, PipelineConfig, require
from contract.errors import ConfigError

# Pipeline parameter -> the (component id, exec property) it stands for.
RUNTIME_PARAMETERS = {
    "train_args": ("Trainer", "train_args"),
    "eval_args": ("Trainer", "eval_args"),
}


def check(config: PipelineConfig) -> None:
    """Rejects settings a Vertex AI run cannot use, naming them."""
    require(config, "Compiling for Vertex AI Pipelines", required=("gcp.image",),
            gcs=("pipeline_root", "serving_dir", "data.input_base")
            + (("edge.edge_dir",) if config.edge.enabled else ()))
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}", config.pipeline_name):
        raise ConfigError(
            f"pipeline_name {config.pipeline_name!r}: Vertex AI accepts only lowercase letters, "
            "digits and hyphens, starting with a letter or digit")
    if not os.path.abspath(config.schema_file).startswith(os.path.join(REPO_ROOT, "schemas") + os.sep):
        raise ConfigError(
            f"schema_file {config.schema_file} is not under schemas/, the schema directory the image "
            "(./Dockerfile) holds; move it there")


def build(config: PipelineConfig) -> Tuple[Any, Dict[str, str]]:
    """The pipeline as Vertex AI runs it, and the defaults of its runtime parameters."""
    from ml_metadata.proto import metadata_store_pb2

    from pipeline.pipeline import create_pipeline, read_prior_runs
    from pipeline.dataflow import dataflow_beam_args

    check(config)
    in_image = dataclasses.replace(config, schema_file=os.path.join(
        config.kubeflow.image_project_dir, os.path.relpath(os.path.abspath(config.schema_file), REPO_ROOT)))
    dag = create_pipeline(
        in_image,
        # Vertex AI keeps its own ML Metadata: this machine's SQLite (and an earlier search in it) means nothing there.
        read_prior_runs(in_image, local_store=False),
        metadata_connection_config=metadata_store_pb2.ConnectionConfig(),
        extra_beam_args=dataflow_beam_args(config) if config.kubeflow.use_dataflow else None)
    components = {c.id: c for c in dag.components}
    return dag, _parameterize(components)


def _parameterize(components: Dict[str, Any]) -> Dict[str, str]:
    """Swaps the exec properties in RUNTIME_PARAMETERS for string pipeline parameters.

    pipeline.py sets TrainArgs/EvalArgs protos, which cannot hold a
    RuntimeParameter; the executors parse the proto from JSON, which is what a
    string parameter carries. Returns each parameter's default: the configured
    proto, as JSON.
    """
    from tfx import v1 as tfx

    defaults = {}
    for name, (component_id, key) in RUNTIME_PARAMETERS.items():
        component = components[component_id]
        # The component spec already holds the proto as (indented) JSON.
        default = json.dumps(json.loads(component.exec_properties[key]), sort_keys=True)
        parameter = tfx.dsl.experimental.RuntimeParameter(name=name, ptype=str, default=default)
        component.spec.PARAMETERS[key].type_check(key, parameter)
        component.exec_properties[key] = parameter
        defaults[name] = default
    return defaults


def compile_pipeline(config: PipelineConfig, out_path: str) -> Dict[str, Any]:
    """Writes the PipelineJob JSON for `config` to `out_path` and returns it."""
    from tfx import v1 as tfx

    from pipeline.pipeline import BASELINE_RESOLVER

    dag, defaults = build(config)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            display_name=config.kubeflow.display_name or config.pipeline_name,
            default_image=config.gcp.image,
            use_pipeline_spec_2_1=True))
    resolver = next(c for c in dag.components if c.id == BASELINE_RESOLVER)
    resolver.as_tfx_strategy = True
    try:
        job = runner.run(dag, parameter_values=defaults, write_out=False)
    finally:
        resolver.as_tfx_strategy = False
    _exclude_candidate(job["pipelineSpec"], resolver)
    leaks = list(_local_paths(job, config.kubeflow.image_project_dir))
    if leaks:
        raise ConfigError(
            "the compiled pipeline points at paths on this machine, which Vertex AI steps cannot "
            "read: " + "; ".join(f"{task}.{name}={value}" for task, name, value in leaks))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(job, f, sort_keys=True, indent=1)
    return job


def _exclude_candidate(spec: Dict[str, Any], resolver) -> None:
    """Gives the compiled ModelBlessing query the Trainer's model as input and leaves its blessings out.

    TFX compiles the baseline Resolver as its LatestBlessedModelStrategy: a task
    that queries the latest positive ModelBlessing, then one that queries the Model
    it names. Here the first task also takes the candidate, so the baseline is
    never the candidate (pipeline/resolvers.py), as in a local run.
    """
    from pipeline.resolvers import CANDIDATE_KEY, exclude_candidate_filter

    candidate = resolver.raw_inputs[CANDIDATE_KEY]
    task_name = f"{resolver.id}-model-blessing-resolver"
    component = spec["components"][task_name]
    model_type = spec["components"][f"{resolver.id}-model-resolver"]["outputDefinitions"]["artifacts"]["model"]
    component.setdefault("inputDefinitions", {}).setdefault("artifacts", {})[CANDIDATE_KEY] = {
        "artifactType": model_type["artifactType"]}
    task = spec["root"]["dag"]["tasks"][task_name]
    task.setdefault("inputs", {}).setdefault("artifacts", {})[CANDIDATE_KEY] = {"taskOutputArtifact": {
        "producerTask": candidate.producer_component_id, "outputArtifactKey": candidate.output_key}}
    task["dependentTasks"] = sorted(set(task.get("dependentTasks", [])) | {candidate.producer_component_id})
    model_task = spec["root"]["dag"]["tasks"][f"{resolver.id}-model-resolver"]
    model_task["dependentTasks"] = sorted(set(model_task.get("dependentTasks", [])) | {task_name})
    query = spec["deploymentSpec"]["executors"][component["executorLabel"]]["resolver"]["outputArtifactQueries"][
        "model_blessing"]
    query["filter"] = exclude_candidate_filter(query["filter"], CANDIDATE_KEY)


def _local_paths(job: Dict[str, Any], image_dir: str) -> Iterable[Tuple[str, str, str]]:
    """(task, parameter, value) for constant parameters that are absolute paths outside the image's project."""
    for task_name, task in job["pipelineSpec"]["root"]["dag"]["tasks"].items():
        for name, spec in task.get("inputs", {}).get("parameters", {}).items():
            value = spec.get("runtimeValue", {}).get("constant")
            if isinstance(value, str) and value.startswith("/") and not value.startswith(image_dir.rstrip("/") + "/"):
                yield task_name, name, value


def parse_parameters(items: List[str]) -> Dict[str, str]:
    """`NAME=JSON` command-line items -> runtime parameter values, checked against RUNTIME_PARAMETERS."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name not in RUNTIME_PARAMETERS or not sep:
            raise ConfigError(f"--param {item!r}: expected NAME=JSON with NAME one of {', '.join(RUNTIME_PARAMETERS)}")
        try:
            ok = isinstance(json.loads(value), dict)
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"--param {name}: expected a JSON object such as '{{\"num_steps\": 5000}}', got {value!r}")
        values[name] = value
    return values


def check_submit(config: PipelineConfig) -> None:
    """Rejects settings Vertex AI needs to start a job, naming them."""
    require(config, "Submitting to Vertex AI Pipelines", required=("gcp.project", "gcp.region"),
            gcs=("pipeline_root",))


def submit(config: PipelineConfig, pipeline_file: str, parameter_values: Optional[Dict[str, str]] = None,
           wait: bool = False) -> str:
    """Starts the compiled pipeline on Vertex AI Pipelines; returns the job's resource name.

    Uses Application Default Credentials; `wait` blocks until the job ends.
    """
    check_submit(config)
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default()
    except DefaultCredentialsError as e:
        raise ConfigError(
            "no Google Cloud credentials: run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file") from e
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(
        display_name=config.kubeflow.display_name or config.pipeline_name,
        template_path=pipeline_file,
        pipeline_root=config.pipeline_root,
        parameter_values=parameter_values or {},
        enable_caching=config.enable_cache,
        credentials=credentials,
        project=config.gcp.project,
        location=config.gcp.region)
    job.submit(service_account=config.gcp.service_account or None)
    if wait:
        job.wait()
    return job.resource_name
