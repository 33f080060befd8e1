"""Availability first: a version that fails to load, or a models.config edit that cannot be applied, never costs
the version that serves (TF Serving's AvailabilityPreservingPolicy), and GetModelStatus says what failed.

The fast tests drive `ModelManager` on tiny real SavedModels; the load test runs the whole server on a copy of
`pushed_run`'s model with a client sending requests the whole time.
"""

import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from contract.config import ServingConfig
from contract.versions import list_versions
from serving import model_config
from serving.errors import RequestError
from serving.manager import ModelManager
from serving.process import ModelServer
from tests.samples import read_examples, tiny_saved_model

Status = get_model_status_pb2.ModelVersionStatus
RETRY = 0.2


def _settings(**overrides):
    values = dict(port=0, rest_port=0, poll_interval_seconds=RETRY, load_retry_interval_seconds=RETRY,
                  enable_batching=False)
    values.update(overrides)
    return ServingConfig(**values)


def _model_dir(root, *versions):
    """`<root>/serving/tipper/<v>` for each version, and models.config following the latest."""
    base = os.path.join(str(root), "serving", "tipper")
    for version in versions:
        tiny_saved_model(os.path.join(base, str(version)), offset=float(version))
    path = os.path.join(str(root), "serving", "models.config")
    model_config.ensure(path, "tipper", base)
    return path, base


def _corrupt(base, version, data=b"\x08\x96\x01 this is not a SavedModel \xff\xfe"):
    """A version directory whose saved_model.pb is garbage, moved into the base path in one rename."""
    staging = os.path.join(base, f".incoming-{version}")
    shutil.copytree(os.path.join(base, str(min(list_versions(base)))), staging)
    with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
        f.write(data)
    os.rename(staging, os.path.join(base, str(version)))


def _served(manager, **spec):
    return manager.resolve(model_pb2.ModelSpec(name="tipper", **spec)).version


CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _states(manager):
    return [(s.version, Status.State.Name(s.state), CODE_NAMES[s.status.error_code])
            for s in manager.status("tipper")]


def _wait(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_corrupt_newest_version_is_reported_and_the_serving_one_stays(tmp_path):
    path, base = _model_dir(tmp_path, 1)
    manager = ModelManager(path, _settings(max_load_retries=2))
    manager.poll()
    _corrupt(base, 2)
    manager.poll()
    assert _served(manager) == 1
    assert _states(manager) == [(1, "AVAILABLE", "OK"), (2, "END", "DATA_LOSS")]
    message = manager.status("tipper")[1].status.error_message
    assert f"Can't parse {os.path.join(base, '2', 'saved_model.pb')} as binary proto" in message
    assert "attempt 1; next in" in message
    # Retried with backoff (0.2 s, then 0.4 s), then given up after max_load_retries; version 1 serves throughout.
    fails = manager.metrics.load_attempt_count.labels(os.path.join(base, "2"), "fail")
    assert _wait(lambda: manager.poll() or fails._value.get() == 3, timeout=10)
    assert "gave up after 3 attempts" in manager.status("tipper")[1].status.error_message
    for _ in range(3):
        manager.poll()
    assert fails._value.get() == 3 and _served(manager) == 1

    # A good newer version replaces both: it serves, version 1 is unloaded, the failed one is no longer reported.
    tiny_saved_model(os.path.join(base, "3"), offset=3.0)
    manager.poll()
    assert _states(manager) == [(3, "AVAILABLE", "OK")]
    assert _served(manager) == 3
    manager.shutdown()


def test_a_server_starting_with_a_corrupt_newest_version_serves_the_one_before(tmp_path):
    """A restart (or a restarted worker) must not lose what a running server kept serving."""
    path, base = _model_dir(tmp_path, 1)
    _corrupt(base, 2)
    manager = ModelManager(path, _settings())
    manager.poll()
    assert _served(manager) == 1
    assert _states(manager) == [(1, "AVAILABLE", "OK"), (2, "END", "DATA_LOSS")]
    manager.shutdown()


def test_a_half_written_version_is_retried_and_serves_once_complete(tmp_path):
    path, base = _model_dir(tmp_path, 1)
    manager = ModelManager(path, _settings())
    manager.poll()
    whole = tiny_saved_model(str(tmp_path / "whole"), offset=2.0)
    with open(os.path.join(whole, "saved_model.pb"), "rb") as f:
        data = f.read()
    target = os.path.join(base, "2")
    os.makedirs(target)  # a copy that is not atomic: the directory appears, then its files
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(data[:len(data) // 2])
    manager.poll()
    assert _served(manager) == 1 and _states(manager)[1][1:] == ("END", "DATA_LOSS")
    shutil.copytree(os.path.join(whole, "variables"), os.path.join(target, "variables"))
    with open(os.path.join(target, "saved_model.pb"), "wb") as f:
        f.write(data)
    assert _wait(lambda: manager.poll() or _states(manager) == [(2, "AVAILABLE", "OK")], timeout=10)
    assert _served(manager) == 2
    manager.shutdown()


def test_config_edits_that_cannot_apply_keep_what_serves(tmp_path):
    path, base = _model_dir(tmp_path, 1, 2)
    manager = ModelManager(path, _settings())
    model_config.rollout(path, "tipper", 1)
    manager.poll()
    assert _served(manager, version_label="stable") == 1

    config = model_config.read(path)
    good_base = config.model_config_list.config[0].base_path
    config.model_config_list.config[0].base_path = str(tmp_path / "nowhere")
    model_config.write(path, config)
    manager.poll()
    assert _served(manager, version_label="stable") == 1
    assert "base path " + str(tmp_path / "nowhere") + " does not exist" in manager.problems()["tipper"]
    assert "keeping versions [1]" in manager.problems()["tipper"]

    config.model_config_list.config[0].base_path = good_base
    config.model_config_list.config[0].version_labels["stable"] = 7
    config.model_config_list.config[0].model_version_policy.specific.versions[:] = [7]
    model_config.write(path, config)
    manager.poll()
    assert _served(manager, version_label="stable") == 1
    assert "label 'stable' names version 7, which is not under" in manager.problems()["tipper"]
    events = manager.metrics.model_events.labels("tipper", "", "config_error")._value.get()
    manager.poll()
    assert manager.metrics.model_events.labels("tipper", "", "config_error")._value.get() == events == 2

    model_config.rollout(path, "tipper", 2)
    manager.poll()
    assert _served(manager, version_label="stable") == 2 and manager.problems() == {}
    manager.shutdown()


def test_a_label_moved_onto_a_version_that_fails_stays_where_it_served(tmp_path):
    path, base = _model_dir(tmp_path, 1)
    _corrupt(base, 2)
    manager = ModelManager(path, _settings())
    model_config.rollout(path, "tipper", 1)
    manager.poll()
    model_config.rollout(path, "tipper", 2)
    manager.poll()
    assert _served(manager, version_label="stable") == 1
    assert _states(manager) == [(1, "AVAILABLE", "OK"), (2, "END", "DATA_LOSS")]
    manager.shutdown()


def test_a_model_whose_only_version_fails_answers_not_found_and_says_why(tmp_path):
    base = os.path.join(str(tmp_path), "serving", "tipper")
    os.makedirs(base)
    tiny_saved_model(str(tmp_path / "good"))
    shutil.copytree(str(tmp_path / "good"), os.path.join(base, "5"))
    os.remove(os.path.join(base, "5", "saved_model.pb"))
    path = os.path.join(str(tmp_path), "serving", "models.config")
    model_config.ensure(path, "tipper", base)
    manager = ModelManager(path, _settings())
    manager.poll()
    with pytest.raises(RequestError, match="has no version loaded yet; see GetModelStatus"):
        _served(manager)
    assert _states(manager) == [(5, "END", "NOT_FOUND")]
    assert "SavedModel not found in export directory" in manager.status("tipper")[0].status.error_message


def test_serving_status_names_the_failed_version_and_a_config_edit_it_refused(tmp_path, capsys):
    from cli import serving as serving_cli

    path, base = _model_dir(tmp_path, 1)
    _corrupt(base, 2)
    server = ModelServer(path, _settings())
    server.start()
    try:
        config = model_config.read(path)
        config.model_config_list.config[0].version_labels["canary"] = 9
        config.model_config_list.config[0].model_version_policy.specific.versions[:] = [1, 9]
        model_config.write(path, config)
        settings = [f"--set=serving_dir={tmp_path / 'serving'}", "--set=model_name=tipper",
                    f"--set=log_dir={tmp_path / 'logs'}"]
        assert serving_cli.main(["status", "--target", f"127.0.0.1:{server.port}", *settings]) == 0
    finally:
        server.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tipper version 1: AVAILABLE"
    assert lines[1].startswith("tipper version 2: END (DATA_LOSS: Can't parse ")
    assert lines[2].startswith("not applied (the server keeps what it serves): model 'tipper': label 'canary' "
                               "names version 9, which is not under ")


@pytest.mark.slow
def test_corrupt_newest_version_under_load_fails_no_request(pushed_run, tmp_path):
    """The operator's case: a corrupt version lands while clients send requests; not one request fails."""
    config, _ = pushed_run
    serving_dir = str(tmp_path / "serving")
    shutil.copytree(config.serving_dir, serving_dir)
    base = os.path.join(serving_dir, config.model_name)
    path = os.path.join(serving_dir, "models.config")
    model_config.ensure(path, config.model_name, base)
    good = list_versions(base)[-1]
    server = ModelServer(path, _settings(enable_batching=True))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = config.model_name
    (example,) = read_examples(os.path.join(config.data.input_base, "Split-eval", "*"), 1)
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string))
    answered, failures, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                answered.append(stub.Predict(request, timeout=30).model_spec.version.value)
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    def status():
        ask = get_model_status_pb2.GetModelStatusRequest()
        ask.model_spec.name = config.model_name
        return [(s.version, Status.State.Name(s.state), s.status.error_code)
                for s in status_stub.GetModelStatus(ask, timeout=30).model_version_status]

    thread = threading.Thread(target=client)
    fails = server.metrics.load_attempt_count.labels(os.path.join(base, str(good + 1)), "fail")
    try:
        thread.start()
        assert _wait(lambda: len(answered) >= 20)
        _corrupt(base, good + 1)
        assert _wait(lambda: fails._value.get() >= 2), "the corrupt version was not retried"
        during = len(answered)
        assert status() == [(good, "AVAILABLE", 0), (good + 1, "END", grpc.StatusCode.DATA_LOSS.value[0])]
        staging = os.path.join(base, ".incoming-good")
        shutil.copytree(os.path.join(base, str(good)), staging)
        os.rename(staging, os.path.join(base, str(good + 2)))
        assert _wait(lambda: answered[-1] == good + 2)
        assert status() == [(good + 2, "AVAILABLE", 0)]
    finally:
        stop.set()
        thread.join()
        channel.close()
        server.stop()
    assert failures == []
    assert set(answered[:during]) == {good} and during > 20
    assert answered[-1] == good + 2
    np.testing.assert_equal(sorted(set(answered)), [good, good + 2])
