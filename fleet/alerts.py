"""Alertmanager's webhook receiver: a firing drift or served-metric alert retrains that tenant's model.

Alertmanager POSTs its webhook JSON (version 4: `{"status", "alerts": [{"status", "labels", "annotations",
"startsAt", ...}], ...}`) to `/alerts`. Every firing alert labelled `action: retrain` (the rules in
`deploy/alerts.yml` put it on the skew, drift and served-metric alerts) whose `model_name` is a model of
the fleet starts one fleet run of that model, in its own process as `fleet run` starts them, recorded in
the fleet's state with the alert as its reason. Nothing else starts a run: resolved alerts, other alerts,
models of no tenant here (answered and counted, so a misrouted alert is visible in the reply), a model
whose last run started less than `monitoring.retrain_cooldown_seconds` ago (Alertmanager repeats a firing
alert every repeat_interval, and drift and metric alerts often fire together), or one already running.
The skipped ones are recorded as checks with their reason, so `fleet status` shows what the alerts did.

The server is the standard library's threaded HTTP server: Alertmanager sends a few small JSON documents
a minute; it answers at once and the runs go on in threads.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, TextIO

from fleet.config import Fleet
from fleet.controller import Controller

PATH = "/alerts"
ACTION_LABEL, RETRAIN = "action", "retrain"
MAX_BODY_BYTES = 1 << 20


def reason_of(alert: Dict) -> str:
    """The run's recorded reason: the alert's name, its summary and when it started firing."""
    labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
    summary = annotations.get("summary") or annotations.get("description") or ""
    return (f"alert {labels.get('alertname', '?')}" + (f": {summary}" if summary else "")
            + (f" (firing since {alert['startsAt']})" if alert.get("startsAt") else ""))


class Receiver:
    """Turns Alertmanager notifications into fleet runs (`handle`), one run per model at a time."""

    def __init__(self, fleet: Fleet, out: TextIO):
        self.fleet = fleet
        self.controller = Controller(fleet, out)
        self._running: Dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def handle(self, document: Dict) -> Dict[str, List[str]]:
        """{"started": [model: reason], "skipped": [model or alert: why]} for one notification."""
        answer: Dict[str, List[str]] = {"started": [], "skipped": []}
        for alert in document.get("alerts", []):
            labels = alert.get("labels", {})
            name, model_name = labels.get("alertname", "?"), labels.get("model_name", "")
            if alert.get("status") != "firing" or labels.get(ACTION_LABEL) != RETRAIN:
                answer["skipped"].append(f"{name}: {alert.get('status')}, action {labels.get(ACTION_LABEL)!r}")
                continue
            model = next((m for m in self.fleet.models if m.name == model_name), None)
            if model is None:
                answer["skipped"].append(f"{name}: model {model_name!r} is not in {self.fleet.path}")
                continue
            reason = reason_of(alert)
            why_not = self._why_not(model)
            if why_not:
                self.controller.state.record_check(model.name, f"skipped: {reason}: {why_not}")
                answer["skipped"].append(f"{model.name}: {why_not}")
                continue
            thread = threading.Thread(target=self.controller.run_now, args=(model, reason), name=model.name)
            with self._lock:
                self._running[model.name] = thread
            thread.start()
            answer["started"].append(f"{model.name}: {reason}")
        return answer

    def _why_not(self, model) -> str:
        with self._lock:
            running = self._running.get(model.name)
            if running is not None and running.is_alive():
                return "a run started by an earlier alert is still going"
        last = self.controller.state.last_run(model.name)
        cooldown = model.config.monitoring.retrain_cooldown_seconds
        if last and time.time() - last["started"] < cooldown:
            return (f"its last run ({last['status']}, {last['reason'][:80]}) started "
                    f"{time.time() - last['started']:.0f} s ago, within monitoring.retrain_cooldown_seconds "
                    f"({cooldown:g})")
        return ""

    def wait(self) -> None:
        """Lets the runs started so far finish."""
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join()


def _handler(receiver: Receiver):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != PATH:
                return self._reply(404, {"error": f"POST Alertmanager's webhook JSON to {PATH}"})
            if length > MAX_BODY_BYTES:
                return self._reply(413, {"error": f"body of {length} bytes is over {MAX_BODY_BYTES}"})
            try:
                document = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as error:
                return self._reply(400, {"error": f"not JSON: {error}"})
            if not isinstance(document, dict):
                return self._reply(400, {"error": "expected Alertmanager's webhook JSON object"})
            self._reply(200, receiver.handle(document))

        def _reply(self, status: int, body: Dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 - the base class's name; requests are not logged
            pass

    return Handler


def serve(fleet: Fleet, host: str, port: int, out: TextIO) -> ThreadingHTTPServer:
    """Starts the receiver on its own thread; returns the server (`server_address` has the bound port)."""
    receiver = Receiver(fleet, out)
    server = ThreadingHTTPServer((host, port), _handler(receiver))
    server.receiver = receiver
    threading.Thread(target=server.serve_forever, daemon=True, name="alerts").start()
    return server

