"""Production runners: Dataflow options, the Vertex AI / KFP v2 compile, the Beam runner.

Nothing here may reach Google: every test refuses non-loopback connections, and
the compile test builds the module wheels into tmp_path instead of uploading
them to the gs:// pipeline root.
"""

import io
import json
import os
import socket

import pytest

from contract.config import REPO_ROOT, load_config
from contract.errors import ConfigError
from runners import kubeflow_v2
from cli.pipeline import main
from pipeline.dataflow import dataflow_beam_args
from tests.samples import small_config

IMAGE = "us-docker.pkg.dev/my-project/ml/taxi:test"
CLOUD = [
    "gcp.project=my-project",
    "gcp.region=us-central1",
    f"gcp.image={IMAGE}",
    "dataflow.temp_location=gs://my-bucket/tmp/",
    "pipeline_root=gs://my-bucket/taxi/root",
    "serving_dir=gs://my-bucket/taxi/serving",
    "edge.edge_dir=gs://my-bucket/taxi/edge",
    "data.input_base=gs://my-bucket/taxi/data",
    "training.train_steps=321",
    "training.eval_steps=12",
]


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Fails any connection that leaves this machine (module scope: covers the module fixtures too)."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family == socket.AF_UNIX or address[0] in ("localhost", "127.0.0.1", "::1"):
            return real_connect(sock, address)
        raise AssertionError(f"test tried to connect to {address}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        yield


# --- Dataflow -----------------------------------------------------------------------------------------------------

def test_dataflow_args_carry_every_documented_option():
    args = dataflow_beam_args(load_config(None, CLOUD + ["dataflow.machine_type=n2-standard-8",
                                                         "dataflow.max_num_workers=7"]))
    assert args == [
        "--runner=DataflowRunner",
        "--project=my-project",
        "--region=us-central1",
        "--temp_location=gs://my-bucket/tmp",
        "--staging_location=gs://my-bucket/tmp/staging",
        "--machine_type=n2-standard-8",
        "--max_num_workers=7",
        "--disk_size_gb=50",
        f"--sdk_container_image={IMAGE}",
        "--sdk_location=container",
        "--experiments=use_runner_v2",
    ]
    with_account = dataflow_beam_args(load_config(None, CLOUD + [
        "dataflow.staging_location=gs://other/staging",
        "gcp.service_account=runner@my-project.iam.gserviceaccount.com"]))
    assert "--staging_location=gs://other/staging" in with_account
    assert with_account[-1] == "--service_account_email=runner@my-project.iam.gserviceaccount.com"


def test_dataflow_args_name_every_missing_setting():
    with pytest.raises(ConfigError) as error:
        dataflow_beam_args(load_config())
    for name in ("gcp.project", "gcp.region", "gcp.image", "dataflow.temp_location"):
        assert name in str(error.value)
    with pytest.raises(ConfigError, match=r"dataflow\.temp_location must be a gs:// path, not '/tmp/x'"):
        dataflow_beam_args(load_config(None, CLOUD + ["dataflow.temp_location=/tmp/x"]))


def test_dataflow_args_command_prints_one_option_per_line(capsys):
    assert main(["dataflow-args"] + [a for s in CLOUD for a in ("--set", s)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "--runner=DataflowRunner"
    assert main(["dataflow-args"]) == 2
    assert "gcp.project is not set" in capsys.readouterr().err


# --- Vertex AI / KFP v2 -------------------------------------------------------------------------------------------

def test_kubeflow_compile_names_settings_it_cannot_use():
    with pytest.raises(ConfigError) as error:
        kubeflow_v2.check(load_config())
    for name in ("gcp.image", "pipeline_root", "serving_dir", "data.input_base"):
        assert name in str(error.value)
    with pytest.raises(ConfigError, match="pipeline_name 'taxi_v2'"):
        kubeflow_v2.check(load_config(None, CLOUD + ["pipeline_name=taxi_v2"]))


def test_submit_names_missing_settings_before_compiling(tmp_path, capsys):
    settings = [s for s in CLOUD if not s.startswith("gcp.project")] + [f"output_dir={tmp_path}"]
    assert main(["submit", "--out", str(tmp_path / "p.json")] + [a for s in settings for a in ("--set", s)]) == 2
    assert "gcp.project is not set" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "p.json")


def test_runtime_parameters_must_be_known_json_objects():
    assert kubeflow_v2.parse_parameters(['train_args={"num_steps": 5}']) == {"train_args": '{"num_steps": 5}'}
    with pytest.raises(ConfigError, match="NAME one of train_args, eval_args"):
        kubeflow_v2.parse_parameters(['train_steps={"num_steps": 5}'])
    with pytest.raises(ConfigError, match="JSON object"):
        kubeflow_v2.parse_parameters(["eval_args=5"])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(config, PipelineJob dict, wheel dir): one compile of the cloud config, shared by the tests below."""
    from tfx.components.util import udf_utils

    tmp = tmp_path_factory.mktemp("kubeflow")
    wheels_root = str(tmp / "root")
    settings = CLOUD + [f"output_dir={tmp}", "kubeflow.use_dataflow=true"]
    config = load_config(None, settings)
    resolve = udf_utils.UserModuleFilePipDependency.resolve
    with pytest.MonkeyPatch.context() as patch:
        # The real packaging, but into tmp rather than gs://my-bucket/taxi/root/_wheels.
        patch.setattr(udf_utils.UserModuleFilePipDependency, "resolve",
                      lambda self, root: resolve(self, wheels_root if root == config.pipeline_root else root))
        code = main(["compile", "--runner", "kubeflow_v2", "--out", str(tmp / "pipeline.json")]
                    + [a for s in settings for a in ("--set", s)])
    assert code == 0
    with open(tmp / "pipeline.json", encoding="utf-8") as f:
        return config, json.load(f), os.path.join(wheels_root, "_wheels")


def test_compiled_json_parses_as_a_kfp_pipeline_job(compiled):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    config, job, _ = compiled
    parsed = json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    assert spec.pipeline_info.name == "taxi" and spec.schema_version == "2.1.0"
    assert parsed.runtime_config.gcs_output_directory == config.pipeline_root


def test_compiled_pipeline_has_every_local_component_in_the_same_order(compiled):
    from pipeline.pipeline import create_pipeline

    config, job, _ = compiled
    local = {c.id: {u.id for u in c.upstream_nodes} for c in create_pipeline(config).components}
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    # A Resolver compiles to one task per output: "<id>-model-resolver", "<id>-model-blessing-resolver".
    component_of = {t: next(c for c in local if t == c or t.startswith(c + "-")) for t in tasks}
    assert set(component_of.values()) == set(local)

    def ancestors(task, seen=None):
        seen = set() if seen is None else seen
        for parent in tasks[task].get("dependentTasks", []):
            if parent not in seen:
                seen.add(parent)
                ancestors(parent, seen)
        return seen

    for task in tasks:
        # The resolver's second task follows its first: the same local node, not an upstream one.
        upstream = {component_of[t] for t in ancestors(task)} - {component_of[task]}
        local_upstream = set()
        stack = list(local[component_of[task]])
        while stack:
            node = stack.pop()
            if node not in local_upstream:
                local_upstream.add(node)
                stack.extend(local[node])
        assert upstream == local_upstream, task


def test_compiled_pipeline_runs_in_the_configured_image_with_cloud_paths(compiled):
    config, job, wheels = compiled
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    assert len(containers) == len(executors) - 2  # the two resolver tasks run no container
    assert {c["image"] for c in containers.values()} == {IMAGE}
    # kubeflow.use_dataflow: Beam steps get the Dataflow options.
    assert set(dataflow_beam_args(config)) <= set(containers["Transform_executor"]["args"])

    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]

    def param(task, name):
        return tasks[task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    assert param("ImportExampleGen", "input_base") == "gs://my-bucket/taxi/data"
    assert param("ImportSchemaGen", "schema_file") == "/pipeline/schemas/taxi/schema.pbtxt"
    assert '"base_directory": "gs://my-bucket/taxi/serving/taxi"' in param("Pusher", "push_destination")
    for task in ("Transform", "Tuner", "Trainer"):
        assert param(task, "module_path").split("@")[1].startswith(wheels)
    assert len(os.listdir(wheels)) == 3
    assert "sqlite" not in json.dumps(job)


def test_compiled_pipeline_exposes_train_and_eval_args_as_runtime_parameters(compiled):
    _, job, _ = compiled
    spec = job["pipelineSpec"]
    assert spec["root"]["inputDefinitions"]["parameters"] == {
        "train_args": {"parameterType": "STRING"}, "eval_args": {"parameterType": "STRING"}}
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    assert trainer["train_args"] == {"componentInputParameter": "train_args"}
    assert trainer["eval_args"] == {"componentInputParameter": "eval_args"}
    assert job["runtimeConfig"]["parameterValues"] == {
        "train_args": '{"num_steps": 321}', "eval_args": '{"num_steps": 12}'}


def test_compiled_baseline_query_leaves_out_the_candidate(compiled):
    """As locally (pipeline/resolvers.py): the blessing query takes the Trainer's model and skips it."""
    _, job, _ = compiled
    spec = job["pipelineSpec"]
    name = "latest_blessed_model_resolver-model-blessing-resolver"
    task = spec["root"]["dag"]["tasks"][name]
    assert task["inputs"]["artifacts"]["candidate"] == {
        "taskOutputArtifact": {"producerTask": "Trainer", "outputArtifactKey": "model"}}
    assert task["dependentTasks"] == ["Trainer"]
    assert (spec["components"][name]["inputDefinitions"]["artifacts"]["candidate"]
            == spec["components"]["Evaluator"]["inputDefinitions"]["artifacts"]["model"])
    query = spec["deploymentSpec"]["executors"][spec["components"][name]["executorLabel"]]["resolver"][
        "outputArtifactQueries"]["model_blessing"]["filter"]
    assert query.startswith('schema_title="tfx.ModelBlessing" AND state=LIVE AND metadata.blessed.number_value=1')
    assert query.endswith(""" AND metadata.current_model.string_value!="{{$.inputs.artifacts['candidate'].uri}}\"""")
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["artifacts"]["baseline_model"]
    assert evaluator["taskOutputArtifact"]["producerTask"] == "latest_blessed_model_resolver-model-resolver"


# --- Beam ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("mode,workers", [("in_memory", 0)])
def test_beam_runner_pushes_a_model(tmp_path, small_sample, mode, workers):
    """BeamDagRunner end to end. in_memory: multi_processing costs CI ~1 minute more per run; `make bench-data`
    runs the Beam stages in both modes."""
    from runners import beam
    from pipeline.metadata import open_metadata
    from reports.summary import read_run

    config = small_config(
        str(tmp_path), small_sample,
        "training.train_steps=20", "training.eval_steps=5", "tuner.enabled=false",
        # A 20-step model is weak; this test is about the runner, not the blessing.
        "evaluator.min_auc=0", "evaluator.min_binary_accuracy=0", "edge.enabled=false",
        f"beam.direct_running_mode={mode}", f"beam.direct_num_workers={workers}")
    out = io.StringIO()
    assert beam.run(config, out) == 0, out.getvalue()
    # BeamDagRunner's "node X is running." lines reach the progress display.
    assert "Trainer" in out.getvalue() and "done" in out.getvalue()
    summary = read_run(open_metadata(config.metadata_path), config.pipeline_name)
    assert summary.pushed, out.getvalue()
    assert os.listdir(config.model_serving_dir)


# --- The production image ---------------------------------------------------------------------------------------

def _image_imports(compiled) -> list:
    """Every `module:Class` executor and every module-file module the compiled pipeline makes a step import."""
    config, job, wheels = compiled
    names = set()
    for executor in job["pipelineSpec"]["deploymentSpec"]["executors"].values():
        args = executor.get("container", {}).get("args", [])
        if "--executor_class_path" in args:
            module, _, cls = args[args.index("--executor_class_path") + 1].rpartition(".")
            names.add(f"{module}:{cls}")
    tasks = job["pipelineSpec"]["root"]["dag"]["tasks"]
    for task in ("Transform", "Tuner", "Trainer"):  # `preprocessing@<wheel>`: the step installs the wheel
        names.add(tasks[task]["inputs"]["parameters"]["module_path"]["runtimeValue"]["constant"].split("@")[0])
    # Vertex AI runs the resolvers as queries; a runner inside the image (Beam, Airflow) imports their strategies.
    from tfx.dsl.components.common import resolver

    from pipeline.pipeline import create_pipeline

    for node in create_pipeline(config).components:
        strategy = node.exec_properties.get(resolver.RESOLVER_STRATEGY_CLASS) if isinstance(
            node, resolver.Resolver) else None
        if strategy is not None and strategy.__module__.startswith(("components.", "pipeline.")):
            names.add(f"{strategy.__module__}:{strategy.__qualname__}")
    return sorted(names)


def _image(dockerfile: str, tmp_path, wheels: str):
    from tests.image import image_python_path, install

    root = str(tmp_path / "image")
    path = image_python_path(dockerfile, REPO_ROOT, root)
    for wheel in os.listdir(wheels):  # what each module-file step pip-installs at run time
        install(os.path.join(wheels, wheel), os.path.join(root, "module-wheels"))
    return root, path + [os.path.join(root, "module-wheels")]


# The image as it was before the project became a package: five folders on PYTHONPATH.
FOLDERS_ON_PYTHONPATH = """
FROM tensorflow/tfx:1.16.0
WORKDIR /pipeline
COPY pipeline/ pipeline/
COPY components/ components/
COPY schemas/ schemas/
COPY models/ models/
COPY runners/ runners/
ENV PYTHONPATH=/pipeline
"""


def _own(names) -> list:
    """Top-level names that are this project's: its packages and the module files' modules."""
    from importlib.metadata import distribution

    packages = {line.split("/")[0] for line in distribution("tfx-edge-pipeline").read_text("top_level.txt").split()}
    return sorted(packages | {n.split(":")[0] for n in names if "." not in n.split(":")[0]})


@pytest.mark.slow
def test_the_image_imports_every_executor_the_compiled_pipeline_names(compiled, tmp_path):
    from tests.image import import_in_image

    names = _image_imports(compiled)
    ours = [n for n in names if n.split(".")[0].split(":")[0] in ("components", "pipeline", "preprocessing", "entry")]
    # AnomalyGate, Pusher, EdgeExport executors, the baseline resolver's strategy + the module files (Transform's
    # preprocessing; the Tuner's and Trainer's shared entry)
    assert len(ours) == 6, names
    with open(os.path.join(REPO_ROOT, "Dockerfile"), encoding="utf-8") as f:
        root, path = _image(f.read(), tmp_path, compiled[2])
    assert import_in_image(names, path, root, _own(names)) == {}


@pytest.mark.slow
def test_the_image_check_fails_on_an_image_that_lacks_packages(compiled, tmp_path):
    from tests.image import import_in_image

    names = _image_imports(compiled)
    root, path = _image(FOLDERS_ON_PYTHONPATH, tmp_path, compiled[2])
    failures = import_in_image(names, path, root, _own(names))
    for executor in ("components.anomaly_gate:Executor", "components.edge_export:EdgeExportExecutor",
                     "components.serving_pusher:ServingPusherExecutor"):
        assert "No module named" in failures.get(executor, ""), failures
