"""Training strategies, the local parameter-server cluster, kill-and-resume, and Vertex AI training pools.

The integration tests share one output directory, in order:
1. a default-strategy pipeline run is SIGKILLed once a checkpoint exists, then
   re-run: training resumes from that checkpoint and the model is blessed;
2. the same pipeline with training.strategy=mirrored (Transform cached, the
   Trainer re-runs in a process with 2 logical CPUs);
3. the same with training.strategy=parameter_server (1 ps + 2 worker processes).
Run alone (-k), 2. runs the whole pipeline first.
"""

import glob
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import tensorflow as tf

from contract.config import load_config
from contract.errors import ConfigError
from contract.serving import PREDICTION_KEY
from training import strategies
from tests.samples import small_config

# Fast pipeline settings on top of tests.samples.small_config: no Tuner, no edge export, checkpoints every 20 steps.
TRAINING = ["tuner.enabled=false", "edge.enabled=false", "training.checkpoint_every_steps=20",
            "training.steps_per_execution=5"]


# ---- unit tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, every, expected", [
    (1000, 100, (10, 100)), (60, 25, (3, 20)), (60, 0, (1, 60)), (60, 60, (1, 60)), (61, 20, (4, 16))])
def test_epoch_schedule_checkpoints_at_most_every_n_steps(steps, every, expected):
    schedule = strategies.epoch_schedule(steps, every)
    assert (schedule.epochs, schedule.steps_per_epoch) == expected
    assert steps <= schedule.total_steps < steps + schedule.epochs


def test_strategy_settings_come_from_the_trainer_custom_config():
    assert strategies.training_settings({}).strategy == "default"
    settings = strategies.training_settings({"training": {"strategy": "parameter_server", "workers": 3}})
    assert (settings.strategy, settings.workers) == ("parameter_server", 3)
    with pytest.raises(ValueError, match="'horovod' is not one of default, mirrored, parameter_server"):
        strategies.training_settings({"training": {"strategy": "horovod"}})


@pytest.mark.parametrize("override, message", [
    ("training.strategy=horovod", "training.strategy: 'horovod' is not one of default, mirrored, parameter_server"),
    ("training.workers=0", "training.workers must be positive"),
    ("training.checkpoint_every_steps=-1", "training.checkpoint_every_steps must be 0"),
    ("vertex.accelerator_count=2", "vertex.accelerator_type and vertex.accelerator_count go together"),
])
def test_bad_training_settings_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_pipeline_passes_strategy_settings_to_the_trainer_only():
    from pipeline.pipeline import create_components

    config = load_config(None, ["training.strategy=parameter_server", "training.workers=3"])
    components = {c.id: c for c in create_components(config)}
    trainer_config = json.loads(components["Trainer"].exec_properties["custom_config"])
    assert trainer_config["training"]["strategy"] == "parameter_server"
    assert trainer_config["training"]["workers"] == 3
    assert "training" not in json.loads(components["Transform"].exec_properties["custom_config"])
    # The Tuner trains its trials with the family, batch size and seed alone: a strategy change must not re-run it.
    assert json.loads(components["Tuner"].exec_properties["custom_config"])["training"] == {
        "model": "dnn", "batch_size": 128, "seed": 0}


class _FnArgs:
    def __init__(self, root, **changes):
        self.model_run_dir = os.path.join(root, "Trainer", "model_run", str(changes.pop("execution", 7)))
        self.transform_output = "/t/transform_graph/5"
        self.train_files, self.eval_files = ["/t/train/*"], ["/t/eval/*"]
        self.train_steps = 100
        self.custom_config = {"batch_size": 64}
        self.__dict__.update(changes)


def test_backup_dir_is_stable_across_executions_and_specific_to_the_inputs(tmp_path):
    first = strategies.backup_dir(_FnArgs(str(tmp_path), execution=7), {"hidden_units": 64})
    assert first.startswith(os.path.join(str(tmp_path), "Trainer", strategies.BACKUP_DIR) + os.sep)
    assert strategies.backup_dir(_FnArgs(str(tmp_path), execution=9), {"hidden_units": 64}) == first
    assert strategies.backup_dir(_FnArgs(str(tmp_path)), {"hidden_units": 128}) != first
    assert strategies.backup_dir(_FnArgs(str(tmp_path), train_steps=200), {"hidden_units": 64}) != first
    assert strategies.backup_dir(_FnArgs(str(tmp_path), transform_output="/t/transform_graph/6"),
                                 {"hidden_units": 64}) != first


def _vertex_config(*extra):
    return load_config(None, ["vertex.enabled=true", "gcp.project=acme-ml", "gcp.region=europe-west4",
                              "gcp.image=europe-docker.pkg.dev/acme-ml/ml/taxi:7", *extra])


def test_vertex_parameter_server_job_has_chief_worker_and_ps_pools():
    from tfx.extensions.google_cloud_ai_platform.trainer.component import Trainer as VertexTrainer
    from tfx.extensions.google_cloud_ai_platform.tuner.component import Tuner as VertexTuner

    from pipeline.pipeline import create_pipeline

    config = _vertex_config("training.strategy=parameter_server", "training.workers=4",
                            "training.parameter_servers=2", "gcp.service_account=trainer@acme-ml.iam")
    components = {c.id: c for c in create_pipeline(config).components}
    assert isinstance(components["Trainer"], VertexTrainer) and isinstance(components["Tuner"], VertexTuner)
    custom = json.loads(components["Trainer"].exec_properties["custom_config"])
    assert custom["ai_platform_enable_vertex"] is True and custom["ai_platform_vertex_region"] == "europe-west4"
    job = custom["ai_platform_training_args"]
    assert job["project"] == "acme-ml" and job["job_spec"]["service_account"] == "trainer@acme-ml.iam"
    pools = job["job_spec"]["worker_pool_specs"]
    assert [p["replica_count"] for p in pools] == [1, 4, 2]  # chief, workers, parameter servers
    assert [p["machine_spec"]["machine_type"] for p in pools] == ["n1-standard-8", "n1-standard-8", "n1-highmem-4"]
    assert {p["container_spec"]["image_uri"] for p in pools} == {config.gcp.image}
    # The module still gets its own settings: the same run_fn joins the cluster Vertex AI describes in TF_CONFIG.
    assert custom["training"]["strategy"] == "parameter_server" and custom["features"]
    tuner = json.loads(components["Tuner"].exec_properties["custom_config"])
    assert len(tuner["ai_platform_tuning_args"]["job_spec"]["worker_pool_specs"]) == 1


def test_vertex_mirrored_job_is_one_chief_with_its_gpus():
    from pipeline.pipeline import create_pipeline

    config = _vertex_config("training.strategy=mirrored", "vertex.accelerator_type=NVIDIA_TESLA_T4",
                            "vertex.accelerator_count=2")
    trainer = {c.id: c for c in create_pipeline(config).components}["Trainer"]
    pools = json.loads(trainer.exec_properties["custom_config"])["ai_platform_training_args"]["job_spec"][
        "worker_pool_specs"]
    assert len(pools) == 1 and pools[0]["replica_count"] == 1
    assert pools[0]["machine_spec"]["accelerator_type"] == "NVIDIA_TESLA_T4"
    assert pools[0]["machine_spec"]["accelerator_count"] == 2


def test_vertex_training_needs_project_region_and_image():
    from pipeline.pipeline import create_pipeline

    with pytest.raises(ConfigError, match="gcp.project is not set; gcp.region is not set; gcp.image is not set"):
        create_pipeline(load_config(None, ["vertex.enabled=true"]))


# ---- the local parameter-server cluster ----------------------------------------------------------------------

def _exited(pid: int) -> bool:
    """Gone, or a zombie none of whose threads still runs.

    A thread-group leader turns zombie as soon as its own thread exits, while the process's other threads
    (gRPC's and TensorFlow's pools) may still be exiting, with its file table, listening sockets included,
    open until the last of them ends (measured here: 0.10-0.27 s after SIGKILL, with up to 22 threads left).
    A zombie counts once its thread count is down to the leader alone.
    """
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE and process.num_threads() <= 1
    except psutil.NoSuchProcess:
        return True


def _alive(pid: int) -> bool:
    """Running: neither gone nor a zombie (whose last threads may still be exiting, see `_exited`)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _nothing_listens(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


@pytest.mark.slow
def test_cluster_tasks_die_with_a_sigkilled_trainer(tmp_path):
    """No orphans even when the process that started the cluster gets no chance to clean up."""
    script = textwrap.dedent(f"""
        import json, time
        from training.ps_cluster import LocalCluster
        with LocalCluster(1, 2, ready_dir={str(tmp_path / "ready")!r}) as cluster:
            print(json.dumps(cluster.tasks()), flush=True)
            time.sleep(600)
    """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        tasks = json.loads(owner.stdout.readline())
    finally:
        owner.kill()
        owner.wait()
    assert sorted(t["job"] for t in tasks) == ["ps", "worker", "worker"]
    assert all(t["alive"] for t in tasks)
    deadline = time.time() + 20
    while not all(_exited(t["pid"]) for t in tasks) and time.time() < deadline:
        time.sleep(0.05)
    assert [t for t in tasks if not _exited(t["pid"])] == []
    assert [t["address"] for t in tasks if not _nothing_listens(t["address"])] == []


# ---- pipeline runs: kill-and-resume, then each strategy ------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_sample):
    return str(tmp_path_factory.mktemp("training")), small_sample


def _run(config):
    from runners import local
    from pipeline.metadata import open_metadata
    from reports.summary import read_run

    out = io.StringIO()
    status = local.run(config, out=out)
    assert status == 0, out.getvalue()
    return out.getvalue(), read_run(open_metadata(config.metadata_path), config.pipeline_name)


def _answers_serving_default(model_dir, eval_examples):
    loaded = tf.saved_model.load(model_dir)
    batch = tf.constant([e.SerializeToString() for e in eval_examples[:16]])
    probabilities = loaded.signatures["serving_default"](examples=batch)[PREDICTION_KEY].numpy()
    return probabilities.shape == (16, 1) and ((probabilities >= 0) & (probabilities <= 1)).all()


def _trained_model(summary):
    return os.path.join(summary.component("Trainer").outputs["model"][0], "Format-Serving")


@pytest.fixture(scope="module")
def resumed_run(workspace):
    out_dir, sample = workspace
    config = small_config(out_dir, sample, *TRAINING, "training.train_steps=600")
    config_file = os.path.join(out_dir, "killed-run.yaml")
    with open(config_file, "w", encoding="utf-8") as f:
        f.write(config.to_yaml())
    command = [sys.executable, "-m", "cli", "pipeline", "run", "--config", config_file]
    killed = subprocess.Popen(command, cwd=out_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    pattern = os.path.join(config.pipeline_root, "Trainer", strategies.BACKUP_DIR, "*", "**", "checkpoint")
    try:
        deadline = time.time() + 600
        while not glob.glob(pattern, recursive=True):
            assert killed.poll() is None, f"the run ended before a checkpoint was written: {killed.stdout.read()}"
            assert time.time() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.1)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL
    printed, summary = _run(config)
    return config, printed, summary


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_checkpoint(resumed_run, eval_examples):
    config, printed, summary = resumed_run
    facts = summary.training
    assert facts["strategy"] == "default" and facts["train_steps"] == 600
    assert facts["resumed_from_step"] > 0 and facts["resumed_from_step"] % 20 == 0, facts
    assert f"resumed from step {facts['resumed_from_step']}" in printed
    assert {c.name: c.state for c in summary.components}["Transform"] == "cached"
    assert summary.blessed is True and summary.pushed
    assert _answers_serving_default(summary.pushed_path, eval_examples)
    # A completed training deletes its checkpoint: the next training starts from step 0.
    assert not glob.glob(os.path.join(config.pipeline_root, "Trainer", strategies.BACKUP_DIR, "*", "**",
                                      "checkpoint"), recursive=True)


@pytest.mark.slow
def test_mirrored_strategy_trains_two_replicas_through_the_pipeline(workspace, eval_examples):
    out_dir, sample = workspace
    config = small_config(out_dir, sample, *TRAINING, "training.strategy=mirrored", "training.train_steps=40")
    printed, summary = _run(config)
    facts = summary.training
    assert facts["strategy"] == "mirrored" and facts["replicas"] == 2
    assert facts["global_batch"] == 2 * config.training.batch_size
    assert "training: mirrored, 2 replica(s), global batch 128 (64 per replica)" in printed
    assert summary.component("Trainer").state == "complete"
    assert _answers_serving_default(_trained_model(summary), eval_examples)


@pytest.mark.slow
def test_parameter_server_strategy_trains_on_separate_ps_and_worker_processes(workspace, eval_examples):
    out_dir, sample = workspace
    config = small_config(out_dir, sample, *TRAINING, "training.strategy=parameter_server",
                          "training.train_steps=40")
    printed, summary = _run(config)
    facts = summary.training
    assert facts["strategy"] == "parameter_server" and facts["steps_per_execution"] == 5
    tasks = facts["cluster"]
    workers = [t for t in tasks if t["job"] == "worker"]
    ps = [t for t in tasks if t["job"] == "ps"]
    assert len(workers) == 2 and len(ps) == 1, tasks
    assert len({t["pid"] for t in tasks} | {os.getpid()}) == 4, "each task is its own process"
    # Alive when training ended, and each spent CPU on it (an idle gRPC server spends next to none).
    assert all(t["alive"] and t["cpu_seconds"] > 0.05 for t in tasks), tasks
    assert "cluster of 1 ps + 2 workers" in printed
    assert not [t for t in tasks if _alive(t["pid"])], "cluster processes outlived the training"
    assert all(_nothing_listens(t["address"]) for t in tasks)
    assert _answers_serving_default(_trained_model(summary), eval_examples)
