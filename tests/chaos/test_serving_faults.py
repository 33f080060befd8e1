"""Faults around the server: bad versions landing under load, a push killed or out of disk, a worker killed.

A real `tfx-edge serving serve` process serves tiny real SavedModels (tests/samples.py) while gRPC clients send
requests the whole time; each case counts the requests that failed during the fault.
"""

import glob
import os
import shutil
import subprocess
import sys
import textwrap

import psutil
import pytest

from components.serving_pusher import push_atomically
from contract.versions import list_versions
from tests.chaos.conftest import slow_case
from tests.chaos.faults import Load, Server, kill_group, small_disk, wait_for
from tests.samples import read_examples, tiny_saved_model

MODEL = "tipper"


@pytest.fixture(scope="module")
def example(taxi_root):
    (row,) = read_examples(os.path.join(taxi_root, "Split-eval", "*"), 1)
    del row.features.feature["tips"]
    return row


def _served(root, versions=(1,)):
    base = os.path.join(str(root), "serving", MODEL)
    for version in versions:
        tiny_saved_model(os.path.join(base, str(version)), offset=float(version))
    return base


def _publish(base, version, source):
    """A version moved in with one rename, as every push here does."""
    staging = os.path.join(base, f".arriving-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(base, str(version)))


def test_corrupt_newest_version_under_load(tmp_path, example, chaos_row):
    base = _served(tmp_path)
    server = Server(str(tmp_path), MODEL)
    try:
        with Load(server.target, MODEL, example) as load:
            bad = tiny_saved_model(str(tmp_path / "bad"))
            with open(os.path.join(bad, "saved_model.pb"), "wb") as f:
                f.write(b"\x08\x96\x01 garbage")
            _publish(base, 2, bad)
            assert wait_for(lambda: sum("version 2 failed to load" in line for line in server.lines) >= 2), \
                "".join(server.lines[-5:])
            during = list(load.answered)
            _publish(base, 3, tiny_saved_model(str(tmp_path / "good"), offset=3.0))
            recovered = wait_for(lambda: load.answered[-1] == 3)
    finally:
        server.stop()
    row = chaos_row("corrupt newest version (garbage saved_model.pb), under load", len(load.failures), load.sent,
                    int(set(during) != {1}), recovered, "version 1 served until version 3 replaced it")
    assert row.requests_failed == 0 and row.lost == 0 and row.recovered, load.failures[:3]


def test_half_written_version_under_load(tmp_path, example, chaos_row):
    base = _served(tmp_path)
    whole = tiny_saved_model(str(tmp_path / "whole"), offset=2.0)
    server = Server(str(tmp_path), MODEL)
    try:
        with Load(server.target, MODEL, example) as load:
            target = os.path.join(base, "2")
            os.makedirs(target)  # `cp -r` into the base path: the directory is there before its files
            with open(os.path.join(whole, "saved_model.pb"), "rb") as f:
                data = f.read()
            with open(os.path.join(target, "saved_model.pb"), "wb") as f:
                f.write(data[:len(data) // 3])
            assert wait_for(lambda: any("version 2 failed to load" in line for line in server.lines))
            during = list(load.answered)
            shutil.copytree(os.path.join(whole, "variables"), os.path.join(target, "variables"))
            with open(os.path.join(target, "saved_model.pb"), "wb") as f:
                f.write(data)
            recovered = wait_for(lambda: load.answered[-1] == 2, timeout=60)
    finally:
        server.stop()
    row = chaos_row("half-written version directory (non-atomic copy), under load", len(load.failures), load.sent,
                    int(set(during) != {1}), recovered, "retried with backoff; served once complete")
    assert row.requests_failed == 0 and row.lost == 0 and row.recovered, load.failures[:3]


@slow_case
def test_a_server_worker_killed_under_load(tmp_path, example, chaos_row):
    _served(tmp_path)
    server = Server(str(tmp_path), MODEL, 2)
    try:
        workers = server.worker_pids()
        assert len(workers) == 2
        with Load(server.target, MODEL, example, clients=6, wait_for_ready=True) as load:
            psutil.Process(workers[0]).kill()
            restarted = wait_for(lambda: any("restarting it" in line for line in server.lines), timeout=60)
            replaced = wait_for(lambda: len(server.worker_pids()) == 2 and workers[0] not in server.worker_pids(),
                                timeout=300)
            before = len(load.failures)
            answers = len(load.answered)
            recovered = restarted and replaced and wait_for(lambda: len(load.answered) >= answers + 50)
            recovered = recovered and len(load.failures) == before  # no failure once the worker is back
    finally:
        code = server.stop()
    row = chaos_row("a server worker killed (SIGKILL) under load, 2 workers", len(load.failures), load.sent, 0,
                    recovered and code == 0, "clients wait_for_ready; in-flight requests on its connections fail; the supervisor restarts it")
    assert row.recovered, "".join(server.lines[-10:])


def _big_model(path, megabytes):
    model = tiny_saved_model(path, offset=2.0)
    os.makedirs(os.path.join(model, "assets.extra"), exist_ok=True)
    block = os.urandom(1 << 20)
    with open(os.path.join(model, "assets.extra", "padding.bin"), "wb") as f:
        for _ in range(megabytes):
            f.write(block)
    return model


PUSH = textwrap.dedent("""
    import sys
    from components.serving_pusher import push_atomically
    push_atomically(sys.argv[1], sys.argv[2], int(sys.argv[3]), {"source_model": sys.argv[1]})
""")


@slow_case
def test_kill_9_in_the_middle_of_a_push(tmp_path, example, chaos_row):
    base = _served(tmp_path)
    model = _big_model(str(tmp_path / "big"), 150)
    server = Server(str(tmp_path), MODEL)
    try:
        with Load(server.target, MODEL, example) as load:
            pusher = subprocess.Popen([sys.executable, "-c", PUSH, model, base, "2"], start_new_session=True)
            injected = wait_for(lambda: glob.glob(os.path.join(base, ".incomplete-2-*", "assets.extra", "*")),
                                timeout=120, interval=0.001)
            kill_group(pusher)
            left = glob.glob(os.path.join(base, ".incomplete-*"))
            partial = list_versions(base) != [1]
            push_atomically(model, base, 2, {"source_model": model})  # the re-run
            recovered = wait_for(lambda: load.answered[-1] == 2, timeout=120)
    finally:
        server.stop()
    row = chaos_row("kill -9 in the middle of a push (150 MB version)", len(load.failures), load.sent,
                    int(partial), bool(injected) and recovered and not glob.glob(os.path.join(base, ".incomplete-*")),
                    f"left {len(left)} hidden staging dir, removed by the next push")
    assert injected and row.requests_failed == 0 and row.lost == 0 and row.recovered


def test_disk_full_during_a_push(tmp_path, example, chaos_row):
    with small_disk(str(tmp_path / "disk"), 60) as disk:
        base = _served(disk)
        model = _big_model(str(tmp_path / "big"), 80)
        server = Server(disk, MODEL, 1, 0.2, f"log_dir={tmp_path / 'logs'}")
        try:
            with Load(server.target, MODEL, example) as load:
                with pytest.raises(Exception, match="No space left on device"):
                    push_atomically(model, base, 2, {"source_model": model})
                leftovers = [n for n in os.listdir(base) if n != "1"]
                intact = list_versions(base) == [1] and len(load.answered) > 0
                shutil.rmtree(os.path.join(model, "assets.extra"))  # room again: a normal-sized model
                push_atomically(model, base, 2, {"source_model": model})
                recovered = wait_for(lambda: load.answered[-1] == 2, timeout=120)
        finally:
            server.stop()
    row = chaos_row("disk full during a push (60 MB tmpfs, 80 MB version)", len(load.failures), load.sent,
                    int(not intact), recovered and not leftovers, "staging removed; version 1 kept serving")
    assert row.requests_failed == 0 and row.lost == 0 and row.recovered, leftovers


LOCK = textwrap.dedent("""
    import sys, time
    from contract.locks import RunLock
    RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def test_kill_9_of_a_run_frees_its_pipeline_lock(tmp_path, chaos_row):
    from contract.locks import RunLock

    path = str(tmp_path / "locks" / "taxi.lock")
    holder = subprocess.Popen([sys.executable, "-c", LOCK, path], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    assert holder.stdout.readline().strip() == "held"
    held = RunLock(path).busy()
    kill_group(holder)
    free = RunLock(path).busy() is None
    lock = RunLock(path)
    lock.acquire()  # the next run starts at once: no stale lock to clean up
    lock.release()
    row = chaos_row("kill -9 of a pipeline run holding its run lock", None, 0, 0,
                    bool(held and held["pid"] == holder.pid) and free, "the lock ends with its process")
    assert row.recovered
