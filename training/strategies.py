"""Where and how the Trainer trains: default, mirrored or parameter-server strategy, resumable after a kill.

`run(fn_args, hparams, train_and_export)` picks the `tf.distribute` strategy
named by `training.strategy` and runs model.py's one training function under it:

- default: one device, in the Trainer's own process.
- mirrored: synchronous all-reduce over every GPU, or, without GPUs, over
  `logical_cpu_devices` logical CPUs. Logical devices can only be made before
  TensorFlow initialises its devices; in a pipeline run earlier components
  already have, so training then moves to a fresh child process
  (`python -m training.strategies REQUEST`).
- parameter_server: asynchronous training on a real cluster. With `TF_CONFIG`
  set (Kubeflow TFJob, Vertex AI worker pools) this process joins that cluster:
  the chief coordinates, ps and worker tasks serve. Without it, a child process
  coordinates a `ps_cluster.LocalCluster` of separate ps/worker processes.

Whatever the strategy, training checkpoints every `checkpoint_every_steps`
steps (BackupAndRestore) into a directory that a re-run of the same inputs
finds again, and writes `training.json` next to the run's TensorBoard logs.
"""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from contract.config import STRATEGIES, TrainingConfig, section_from_dict
from contract.errors import ConfigError
from contract.processes import exit_with_parent
from training import ps_cluster

TRAINING_FILE = "training.json"
BACKUP_DIR = "backup"  # under the Trainer's directory in the pipeline root
# The fn_args fields a child training process needs; data_accessor is rebuilt there.
_CHILD_FN_ARGS = ("working_dir", "train_files", "eval_files", "train_steps", "eval_steps", "schema_path",
                  "transform_graph_path", "transform_output", "serving_model_dir", "model_run_dir",
                  "hyperparameters", "custom_config")


def training_settings(custom_config: Optional[Dict]) -> TrainingConfig:
    """The `training:` section the Trainer received in custom_config["training"]."""
    settings = section_from_dict(TrainingConfig, (custom_config or {}).get("training"))
    if settings.strategy not in STRATEGIES:
        raise ConfigError(f"training.strategy: {settings.strategy!r} is not one of {', '.join(STRATEGIES)}")
    return settings


@dataclass
class EpochSchedule:
    """Training as `epochs` rounds of `steps_per_epoch`: a checkpoint at the end of each round."""

    epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def epoch_schedule(train_steps: int, checkpoint_every_steps: int) -> EpochSchedule:
    """Rounds of at most `checkpoint_every_steps` steps that add up to `train_steps` (or just above it).

    BackupAndRestore saves whole rounds for every strategy (ParameterServerStrategy
    has no per-batch hooks), so a kill costs at most one round.
    """
    if checkpoint_every_steps <= 0 or checkpoint_every_steps >= train_steps:
        return EpochSchedule(1, train_steps)
    epochs = math.ceil(train_steps / checkpoint_every_steps)
    return EpochSchedule(epochs, math.ceil(train_steps / epochs))


def backup_dir(fn_args, hparams: Dict) -> str:
    """The BackupAndRestore directory of this training: `<pipeline_root>/Trainer/backup/<key>`.

    A re-run of the pipeline gets a new execution (a new model_run directory),
    so the key is what makes two trainings the same one: the Transform output,
    the data files, the step counts, the strategy and the hyper-parameters.
    """
    trainer_dir = os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip("/")))
    identity = json.dumps({
        "transform": fn_args.transform_output, "train": fn_args.train_files, "eval": fn_args.eval_files,
        "train_steps": fn_args.train_steps, "hparams": hparams, "custom_config": fn_args.custom_config,
    }, sort_keys=True, default=str)
    return os.path.join(trainer_dir, BACKUP_DIR, hashlib.sha256(identity.encode()).hexdigest()[:16])


def fault_tolerance_callbacks(fn_args, hparams: Dict, settings: TrainingConfig):
    """BackupAndRestore (when checkpoints are on), then a callback that sees what it restored."""
    import tf_keras as keras

    progress = _training_progress()
    if settings.checkpoint_every_steps <= 0:
        return [progress], progress
    # Saves at the end of each round; deletes its checkpoint once fit completes.
    return [keras.callbacks.BackupAndRestore(backup_dir(fn_args, hparams)), progress], progress


def _training_progress():
    """A callback recording the step training starts from (after any restore) and the time spent in steps.

    Defined on first use, so importing this module costs no TensorFlow.
    """
    import tf_keras as keras

    class TrainingProgress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.resumed_from_step = 0
            self.train_seconds = 0.0
            self._epoch_started: Optional[float] = None

        def on_train_begin(self, logs=None):
            # BackupAndRestore, earlier in the list, has restored the optimizer's step counter by now.
            self.resumed_from_step = int(self.model.optimizer.iterations.numpy())

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_started = time.perf_counter()

        def _stop_clock(self):
            if self._epoch_started is not None:
                self.train_seconds += time.perf_counter() - self._epoch_started
                self._epoch_started = None

        def on_test_begin(self, logs=None):  # validation is not training time
            self._stop_clock()

        def on_epoch_end(self, epoch, logs=None):
            self._stop_clock()

    return TrainingProgress()


def distributed_dataset(strategy, make_dataset: Callable):
    """What `fit` takes under `strategy`: parameter-server workers build their own input from a DatasetCreator."""
    import tf_keras as keras

    if is_parameter_server(strategy):
        return keras.utils.experimental.DatasetCreator(lambda input_context: make_dataset())
    return make_dataset()


def is_parameter_server(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def run(fn_args, hparams: Dict, train_and_export: Callable, train_function: str) -> Dict:
    """Trains with the configured strategy; returns (and writes to model_run) what `training.json` holds.

    `train_function` ("package.module:function") names `train_and_export` for a
    child training process, which imports it from the installed package.
    """
    settings = training_settings(fn_args.custom_config)
    if settings.strategy == "parameter_server" and os.environ.get("TF_CONFIG"):
        return _train_in_tf_config_cluster(fn_args, hparams, train_and_export)
    if settings.strategy == "default" or (settings.strategy == "mirrored" and _mirrored_devices_here(settings)):
        return train_here(fn_args, hparams, settings, train_and_export)
    return _train_in_child_process(fn_args, hparams, train_function)


def train_here(fn_args, hparams: Dict, settings: TrainingConfig, train_and_export: Callable) -> Dict:
    """Trains in this process; a local parameter-server cluster lives exactly as long as the training."""
    import tensorflow as tf

    if settings.strategy == "parameter_server":
        cluster = ps_cluster.LocalCluster(settings.parameter_servers, settings.workers,
                                          ready_dir=os.path.join(fn_args.model_run_dir, "cluster"))
        with cluster:
            os.environ["GRPC_FAIL_FAST"] = "use_caller"  # a lost worker fails its step, not the process
            strategy = tf.distribute.experimental.ParameterServerStrategy(cluster.resolver())
            facts = train_and_export(fn_args, hparams, strategy)
            facts["cluster"] = cluster.tasks()  # before shutdown: pids, and CPU each task spent
    else:
        devices = _mirrored_devices_here(settings) if settings.strategy == "mirrored" else None
        strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
        facts = train_and_export(fn_args, hparams, strategy)
    _write_training_facts(fn_args, facts)
    return facts


def _mirrored_devices_here(settings: TrainingConfig) -> Optional[List[str]]:
    """The devices MirroredStrategy can use in this process: all GPUs, else enough logical CPUs; None if not."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return [f"/gpu:{i}" for i in range(len(gpus))]
    wanted = settings.logical_cpu_devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
    except RuntimeError:  # Devices already initialised; keep them if there are enough.
        pass
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus[:wanted]] if len(cpus) >= wanted else None


def _train_in_tf_config_cluster(fn_args, hparams: Dict, train_and_export: Callable) -> Dict:
    """Joins the cluster in TF_CONFIG: ps and worker tasks serve until the job ends; the chief trains."""
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("ps", "worker"):
        ps_cluster.serve(resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)
        return {}
    os.environ["GRPC_FAIL_FAST"] = "use_caller"
    facts = train_and_export(fn_args, hparams, tf.distribute.experimental.ParameterServerStrategy(resolver))
    facts["cluster"] = [{"job": job, "index": i, "address": address}
                        for job, addresses in resolver.cluster_spec().as_dict().items()
                        for i, address in enumerate(addresses)]
    _write_training_facts(fn_args, facts)
    return facts


def _write_training_facts(fn_args, facts: Dict) -> None:
    import tensorflow as tf

    tf.io.gfile.makedirs(fn_args.model_run_dir)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, TRAINING_FILE), "w") as f:
        f.write(json.dumps(facts, indent=1, sort_keys=True))


def _train_in_child_process(fn_args, hparams: Dict, train_function: str) -> Dict:
    """Runs the training in `python -m training.strategies REQUEST`; the child dies with this process.

    The child's output goes where this process's goes (the run log).
    """
    request = {name: getattr(fn_args, name) for name in _CHILD_FN_ARGS}
    request["hparams"] = hparams
    request["train_function"] = train_function
    request["parent_pid"] = os.getpid()
    with tempfile.NamedTemporaryFile("w", suffix="-training-request.json", delete=False) as f:
        json.dump(request, f)
    request_path = f.name
    child = subprocess.Popen([sys.executable, "-m", "training.strategies", request_path])
    try:
        status = child.wait()
    finally:
        os.unlink(request_path)
        if child.poll() is None:  # Interrupted (KeyboardInterrupt, exception): stop the child and its cluster.
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if status != 0:
        raise RuntimeError(f"the training process (pid {child.pid}) failed with exit status {status}; "
                           "its traceback is in the run log just above")
    with open(os.path.join(fn_args.model_run_dir, TRAINING_FILE), encoding="utf-8") as f:
        return json.load(f)


def _import_function(path: str) -> Callable:
    """`package.module:function` -> the function."""
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _tf_example_dataset_factory(file_pattern, options, schema):
    """The data_accessor.tf_dataset_factory of a child process: Transform writes gzip tf.Example records."""
    from tfx.components.util import tfxio_utils
    from tfx.proto import example_gen_pb2

    return tfxio_utils.make_tfxio(file_pattern=file_pattern, telemetry_descriptors=["Trainer"],
                                  payload_format=example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE,
                                  schema=schema).TensorFlowDataset(options)


def _child_main(request_path: str) -> None:
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    exit_with_parent(request.pop("parent_pid"))
    # SIGTERM (the Trainer stopping us) unwinds through `finally`, which shuts the local cluster down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    hparams = request.pop("hparams")
    train_function = request.pop("train_function")
    settings = training_settings(request["custom_config"])
    if settings.strategy == "mirrored":
        _mirrored_devices_here(settings)  # before anything initialises TensorFlow's devices
    from absl import logging
    from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs

    logging.set_verbosity(logging.INFO)
    fn_args = FnArgs(**request, data_accessor=DataAccessor(
        tf_dataset_factory=_tf_example_dataset_factory, record_batch_factory=None, data_view_decode_fn=None))
    train_here(fn_args, hparams, settings, _import_function(train_function))
    # The cluster is down; TensorFlow's teardown of its remote contexts would only log connection errors.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    _child_main(sys.argv[1])
