"""Faults in the fleet: two controllers cycling the same fleet at once, and a controller killed mid-cycle.

The demo fleet (two tenants, one shared ML Metadata store, serving directory and models.config) through real
`tfx-edge fleet run` processes. Nothing may run twice at once, no tenant's model or models.config entry may be
lost, and a cycle after the kill must finish what the killed one started.
"""

import os
import signal
import subprocess

from contract.locks import RunLock
from contract.versions import list_versions
from fleet import demo
from fleet.config import load_fleet
from fleet.state import State
from serving import model_config
from tests.chaos.conftest import slow_case
from tests.chaos.faults import CLI, run_until, survivors

TRAIN, EVALUATION = 300, 150


def _fleet_run(path):
    return subprocess.Popen(CLI + ["fleet", "run", "--fleet", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _registered(fleet):
    config = model_config.read(fleet.models[0].config.models_config_path)
    return {m.name for m in config.model_config_list.config}


@slow_case
def test_two_controllers_at_once_then_one_killed_mid_cycle(tmp_path, chaos_row):
    root = str(tmp_path)
    path = demo.lay_out(root, ["acme", "globex"], spans=1, train=TRAIN, evaluation=EVALUATION)
    fleet = load_fleet(path)
    names = {m.name for m in fleet.models}

    first, second = _fleet_run(path), _fleet_run(path)
    outputs = [p.communicate(timeout=3600)[0] for p in (first, second)]
    state = State(fleet.state_path)
    ran = {name: [r["status"] for r in state.runs(name)] for name in names}
    versions = {m.name: list_versions(m.config.model_serving_dir) for m in fleet.models}
    once = all(statuses.count("ok") == 1 and set(statuses) <= {"ok", "busy"} for statuses in ran.values())
    lost = len(names - _registered(fleet)) + sum(len(v) != 1 for v in versions.values())
    row = chaos_row("two fleet controllers cycling one fleet at once (2 tenants)", None, 0, lost,
                    first.returncode == second.returncode == 0 and once,
                    f"runs per model: {ran}")
    assert row.lost == 0 and row.recovered, "\n".join(outputs)

    for tenant in ("acme", "globex"):  # new data: both models are due again
        demo.write_span(os.path.join(root, "data", tenant), 2, demo.tenant_span(tenant, 2, TRAIN, EVALUATION))
    controller, lines = run_until(CLI + ["fleet", "run", "--fleet", path], line=lambda l: " started  (" in l)
    injected = controller.poll() is None
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    # Its pipeline runs are processes of their own: they go on and finish their work, holding their locks.
    assert survivors(fleet.config_dir, timeout=3600) == []
    assert all(RunLock(m.config.run_lock_path).busy() is None for m in fleet.models)
    again = subprocess.run(CLI + ["fleet", "run", "--fleet", path], capture_output=True, text=True, timeout=3600)
    statuses = {name: [r["status"] for r in state.runs(name)] for name in names}
    versions = {m.name: list_versions(m.config.model_serving_dir) for m in fleet.models}
    lost = len(names - _registered(fleet)) + sum(not v for v in versions.values())
    recovered = (again.returncode == 0 and "was cut short (its controller died)" in again.stdout
                 and all(s[-1] == "ok" for s in statuses.values()))
    row = chaos_row("kill -9 of a fleet controller in the middle of a cycle", None, 0, lost, injected and recovered,
                    "its runs finished on their own; the next cycle marked them interrupted and re-ran them")
    assert injected and row.lost == 0 and row.recovered, "".join(lines) + again.stdout + again.stderr
