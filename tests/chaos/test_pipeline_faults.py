"""Faults during real pipeline runs: kill -9 at every component in turn (the push and the edge export among
them), and a full disk during Transform and during the edge export; then a plain re-run.

One output directory on a tmpfs (so the disk can be filled at a chosen moment) holds the runs, their ML
Metadata, the serving and edge directories. A server serves it the whole time, a tiny model pushed as version 1
first, and a client sends requests throughout. After every fault: no partial serving or edge version, no
process of the killed run left, its run lock free, ML Metadata readable. Each run after a fault resumes from
TFX's cache and gets one component further, until the last run completes and pushes.
"""

import os
import re
import time

import psutil
import pytest

from contract.locks import RunLock
from contract.versions import list_versions
from tests.chaos.conftest import slow_case
from tests.chaos.faults import CLI, Load, Server, fill, run_until, small_disk, wait_for
from tests.samples import read_examples, small_config, tiny_saved_model

STARTED = re.compile(r"^\[\s*\d+/\d+\] (\S+)\s+started$")
DONE = re.compile(r"^\[\s*\d+/\d+\] (\S+)\s+done .*?(\(cached\))?$")
DISK_FULL_AT = ("Transform", "EdgeExport")
# Components done within a second or so: killed 0.2 s after they start, so the kill lands in them.
QUICK = {"ImportSchemaGen", "ExampleValidator", "AnomalyGate", "Pusher", "latest_blessed_model_resolver"}


def _versions_whole(base: str) -> bool:
    """Every numbered version is a whole SavedModel or edge model (hidden staging directories are not versions)."""
    for version in list_versions(base):
        names = set(os.listdir(os.path.join(base, str(version))))
        if not ({"saved_model.pb", "variables"} <= names or "manifest.json" in names):
            return False
    return True


def _descendants(pid: int):
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _alive(pids):
    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except psutil.NoSuchProcess:
            pass
    return found


@slow_case
def test_kill_9_at_every_component_and_a_full_disk_then_a_run_recovers(tmp_path, small_sample, chaos_row):
    (example,) = read_examples(os.path.join(small_sample, "Split-eval", "*"), 1)
    del example.features.feature["tips"]
    with small_disk(str(tmp_path / "disk"), 1500) as disk:
        config = small_config(disk, small_sample, "tuner.max_trials=1", "serving_check.requests=5")
        config_path = str(tmp_path / "config.yaml")
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(config.to_yaml())
        tiny_saved_model(os.path.join(config.model_serving_dir, "1"))
        server = Server(disk, config.model_name, 1, 0.5, f"log_dir={tmp_path / 'server-logs'}")
        command = CLI + ["pipeline", "run", "--config", config_path]
        completed, faulted = set(), set()
        try:
            with Load(server.target, config.model_name, example) as load:
                for attempt in range(40):
                    state = {"current": None, "target": None}

                    def watch(line: str) -> bool:
                        if (match := STARTED.match(line.strip())):
                            state["current"] = match.group(1)
                            if match.group(1) not in completed | faulted:
                                state["target"] = match.group(1)
                                return True
                        elif (match := DONE.match(line.strip())) and not match.group(2):
                            completed.add(match.group(1))
                        return False

                    failed_before, sent_before = len(load.failures), load.sent
                    process, lines = run_until(command, line=watch)
                    target = state["target"]
                    if target is None or process.poll() is not None:
                        process.wait()
                        break  # the run went to the end: nothing left to break
                    faulted.add(target)
                    filler = ""
                    if target in DISK_FULL_AT:
                        filler = fill(disk)
                        process.wait(timeout=1800)
                        fault = f"disk full during {target} (1.5 GB tmpfs filled)"
                    else:
                        time.sleep(0.2 if target in QUICK else 1.0)  # into the component's work
                        children = _descendants(process.pid)
                        running = state["current"]
                        os.killpg(process.pid, 9)
                        process.wait()
                        fault = f"kill -9 during {running}" + (f" (started after {target})" if running != target else "")
                        if running not in DISK_FULL_AT:
                            faulted.add(running)
                    # A child still starting up ends at its next check of its parent (PR_SET_PDEATHSIG is set then).
                    left = children if not filler else []
                    wait_for(lambda: not _alive(left), timeout=60, interval=0.2)
                    orphans = _alive(left)
                    if filler:
                        os.remove(filler)
                    whole = _versions_whole(config.model_serving_dir) and _versions_whole(
                        os.path.join(config.edge.edge_dir, config.model_name))
                    lock_free = RunLock(config.run_lock_path).busy() is None
                    from pipeline.metadata import open_metadata

                    readable = bool(open_metadata(config.metadata_path).get_contexts_by_type("pipeline_run"))
                    row = chaos_row(fault, len(load.failures) - failed_before, load.sent - sent_before,
                                    int(not whole), lock_free and readable and not orphans,
                                    f"exit {process.returncode}" + (f"; orphans {orphans}" if orphans else ""))
                    assert row.lost == 0 and row.recovered, "".join(lines[-15:])
                failed_before, sent_before = len(load.failures), load.sent
                final, lines = run_until(command, line=lambda line: False)
                final.wait()
                output = lines.complete()
                newest = list_versions(config.model_serving_dir)[-1]
                served = newest > 1 and wait_for(lambda: load.answered[-1] == newest, timeout=300)
                edge_pushed = bool(list_versions(os.path.join(config.edge.edge_dir, config.model_name)))
        finally:
            server.stop()
        row = chaos_row("re-run after every fault above", len(load.failures) - failed_before,
                        load.sent - sent_before, int(not _versions_whole(config.model_serving_dir)),
                        final.returncode == 0 and bool(served) and edge_pushed,
                        f"{len(faulted)} faults; the pipeline's model serves, its edge model is pushed")
    assert load.failures == [], load.failures[:3]
    assert row.recovered, output
    assert {"ImportExampleGen", "Transform", "Trainer", "Evaluator", "ServingCheck", "Pusher", "EdgeExport"} <= faulted
