"""`fleet run` and `fleet watch`: evaluate every model's triggers, run the due ones, record why and how it went.

Each run is `python -m cli pipeline run --config <fleet>/fleet/configs/<tenant>-<model>.yaml` in its own
process (TFX and Beam are not thread-safe, and a crash — even a segfault or an OOM kill — then ends only that
run). Threads only wait for the processes, at most `fleet.concurrency` at once.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, TextIO

from contract import versions
from fleet.config import Fleet, FleetModel, write_model_config
from fleet.state import State
from fleet import triggers

EXIT_STATUS = {0: "ok", 2: "bad input", 3: "stopped at gate"}
MAX_EXIT = 100  # `fleet run` exits with the number of failed runs, capped here (exit codes are 8 bits)


@dataclass
class Outcome:
    name: str
    status: str  # ok | skipped | stopped at gate | bad input | failed | abandoned
    reason: str
    exit_code: Optional[int] = None
    seconds: float = 0.0
    log: str = ""

    @property
    def failed(self) -> bool:
        return self.status not in ("ok", "skipped")


class Controller:
    def __init__(self, fleet: Fleet, out: TextIO = sys.stdout):
        self.fleet, self.out = fleet, out
        self.state = State(fleet.state_path)
        self.stopping = threading.Event()  # start no new run
        self.abandoning = threading.Event()  # and end the running ones
        self._children: Dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def cycle(self, models: Optional[List[FleetModel]] = None, force: bool = False) -> List[Outcome]:
        """One pass: check every model's triggers (cheap), then run the due ones with bounded concurrency."""
        models = self.fleet.models if models is None else models
        due, outcomes = [], []
        for model in models:
            decision = triggers.evaluate(model, self.state)
            if force:
                decision.reasons.append("forced")
            if decision.due:
                due.append((model, decision))
            else:
                reason = "no new data, schedule not due" if decision.data.files else "no data files"
                self.state.record_check(model.name, "skipped: " + reason, decision.logs, decision.labelled)
                outcomes.append(Outcome(model.name, "skipped", reason))
                self._say(f"{model.name:28s} skipped  ({reason})")
        if due:
            with ThreadPoolExecutor(max_workers=self.fleet.concurrency) as pool:
                outcomes += list(pool.map(lambda item: self._run(*item), due))
        return outcomes

    def run_now(self, model: FleetModel, reason: str) -> Outcome:
        """One run of `model` for `reason` (an alert), whatever its triggers say."""
        return self._run(model, triggers.Decision(reasons=[reason], data=triggers.data_facts(model)))

    def _run(self, model: FleetModel, decision: triggers.Decision) -> Outcome:
        reason = "; ".join(decision.reasons)
        if self.stopping.is_set():
            return Outcome(model.name, "abandoned", reason + " (not started: stopping)")
        config_path = write_model_config(model, self.fleet.config_dir)
        os.makedirs(model.config.log_dir, exist_ok=True)
        log = os.path.join(model.config.log_dir, time.strftime("fleet-%Y%m%d-%H%M%S.out"))
        run_id = self.state.start_run(model.name, reason, triggers.facts_dict(decision.data), log)
        self.state.record_check(model.name, "run: " + reason, decision.logs, decision.labelled)
        started = time.time()
        with open(log, "wb") as f:
            with self._lock:  # registered before abandon() can look, so a signal never misses a new run
                child = subprocess.Popen([sys.executable, "-m", "cli", "pipeline", "run", "--config", config_path],
                                         stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
                self._children[model.name] = child
            if self.abandoning.is_set():
                self.abandon()
            self._say(f"{model.name:28s} started  ({reason}); output {log}")
            code = child.wait()
            with self._lock:
                self._children.pop(model.name, None)
        if self.abandoning.is_set() and code < 0:
            status = "abandoned"
        else:
            status = EXIT_STATUS.get(code, "failed")
        if code == 0 and versions.list_versions(model.config.model_serving_dir):
            self._register(model)
        self.state.finish_run(run_id, status, code)
        outcome = Outcome(model.name, status, reason, code, time.time() - started, log)
        self._say(f"{model.name:28s} {status:8s} exit {code} in {outcome.seconds:.0f}s")
        return outcome

    def _register(self, model: FleetModel) -> None:
        """Adds the model to the shared models.config (follow latest) once it has a version to serve."""
        from serving import model_config

        with self._lock:  # read-modify-write of one file by several finishing runs
            model_config.ensure(model.config.models_config_path, model.name, model.config.model_serving_dir)

    def abandon(self) -> None:
        """Stops launching and ends the running pipelines (their whole process groups)."""
        self.abandoning.set()
        self.stopping.set()
        with self._lock:
            children = list(self._children.values())
        for child in children:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def watch(self, interval: float, on_stop: str = "finish", cycles: int = 0) -> int:
        """Cycles every `interval` seconds until SIGTERM/SIGINT (or `cycles` passes, for tests and demos).

        On the signal: `finish` lets running pipelines complete and starts no more; `abandon` ends them at once
        and records them as abandoned (TFX re-runs from its cache next time).
        """
        def stop(signum, _frame):
            self._say(f"fleet watch: signal {signum}, {'abandoning' if on_stop == 'abandon' else 'finishing'} "
                      "the current runs")
            if on_stop == "abandon":
                self.abandon()
            else:
                self.stopping.set()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        failed, done = 0, 0
        try:
            while not self.stopping.is_set():
                # The cycle runs in a thread so the main thread can take the signal while runs go on.
                result: List[List[Outcome]] = []
                worker = threading.Thread(target=lambda: result.append(self.cycle()))
                worker.start()
                while worker.is_alive():
                    worker.join(0.2)
                failed += sum(o.failed for o in (result[0] if result else []))
                done += 1
                if cycles and done >= cycles:
                    break
                self.stopping.wait(interval)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self._say(f"fleet watch: stopped after {done} cycle(s), {failed} failed run(s)")
        return min(failed, MAX_EXIT)
