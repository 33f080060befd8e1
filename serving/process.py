"""The server process: one model manager, both transports on their ports, and the poll thread.

`ModelServer.start()` loads the models before the ports open (no NOT_FOUND at
start-up), then serves gRPC (8500) and REST (8501, with the Prometheus page);
`stop()` refuses new calls, lets in-flight ones finish, then unloads. Several
worker processes can share the same ports (`workers.py`, `reuse_port`).
"""

import threading
from concurrent import futures
from typing import Optional

import grpc
from tensorflow_serving.apis import (model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from contract.config import FeaturesConfig, ServingConfig
from serving.core import ServingCore
from serving.experiments import ExperimentLog
from serving.grpc_api import ModelService, PredictionService
from serving.manager import ModelManager
from serving.metrics import ServingMetrics
from serving.request_log import RequestLoggers
from serving.rest import RestServer


class ModelServer:
    """The gRPC and REST servers, their model manager and the poll thread. `start()` returns the gRPC port.

    `reuse_port` lets several worker processes listen on the same ports (`workers.py`).
    """

    def __init__(self, models_config_path: str, serving: ServingConfig, label_spec: Optional[FeaturesConfig] = None,
                 max_workers: int = 64, reuse_port: bool = False):
        self.serving = serving
        self.metrics = ServingMetrics()
        self.manager = ModelManager(models_config_path, serving, self.metrics)
        self.loggers = RequestLoggers(serving.request_log_dir, serving.request_log_sample_rate, self.metrics)
        self.experiment_log = ExperimentLog(serving.experiment_log_dir)
        self.core = ServingCore(self.manager, self.loggers, self.experiment_log, label_spec)
        self._reuse_port = reuse_port
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                                   options=[("grpc.so_reuseport", int(reuse_port))])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.core), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), self._server)
        self._rest = None
        self._stopping = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self.port = 0
        self.rest_port = 0

    def start(self) -> int:
        self.manager.poll()  # the first load happens before the ports open: no NOT_FOUND at startup
        address = f"{self.serving.host}:{self.serving.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self.manager.shutdown()
            raise OSError(f"could not bind {address}; is another server using port {self.serving.port}? "
                          "Choose another with --set serving.port=N")
        self._rest = RestServer(self.core, self.serving, reuse_port=self._reuse_port)
        try:
            self.rest_port = self._rest.start()
        except OSError:
            self._server.stop(None)
            self.manager.shutdown()
            raise
        self._server.start()
        self._poller = threading.Thread(target=self._poll_loop, daemon=True, name="model-poller")
        self._poller.start()
        return self.port

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.serving.poll_interval_seconds):
            self.manager.poll()
            self.loggers.flush()
            self.experiment_log.flush()

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Refuses new calls, lets in-flight ones finish (up to `grace_seconds`), then unloads."""
        self._stopping.set()
        if self._rest is not None:
            self._rest.stop()
        self._server.stop(grace_seconds).wait()
        if self._poller is not None:
            self._poller.join()
        self.core.close()
        self.manager.shutdown()
        self.loggers.flush()
        self.experiment_log.flush()


def serve_forever(server: ModelServer) -> None:
    """Runs until SIGINT/SIGTERM, then stops gracefully."""
    import signal

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    server.stop()
