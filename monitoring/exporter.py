"""The monitoring exporter: the series' latest values and the served versions' state, as Prometheus gauges.

Prometheus scrapes it next to the servers (`deploy/prometheus.yml`); the alert rules
(`deploy/alerts.yml`) read these gauges and TF Serving's own metrics, nothing else. Each scrape reads the
monitoring store (the job writes it, from any process or machine that shares the file) and asks the
server for the status of every model in models.config (`GetModelStatus`, which real TF Serving and the
local server both answer), because TF Serving exports no metric of which versions it has loaded.
prometheus_client writes the page and serves it.

    monitoring_feature_distance{model_name, kind, feature, measure}   skew (vs training) / drift (vs previous
    monitoring_feature_threshold{model_name, kind, feature, measure}  window) of the newest window, and the
                                                                       schema's threshold for it
    monitoring_served_metric{model_name, metric, direction}           headline metric on joined late labels
    monitoring_served_metric_bound{model_name, metric, direction}     monitoring.metric_bound (when set)
    monitoring_labels{model_name}                                     joined labels of that window
    monitoring_requests_per_second / monitoring_error_ratio / monitoring_latency_ms{quantile}
    monitoring_window_start_seconds{model_name, measure}              which window each value is of
    monitoring_last_run_timestamp_seconds{model_name}                 when the job last ran
    monitoring_model_version_available{model_name, version}           1 when a version models.config asks
                                                                       for is AVAILABLE on the server, else 0
    monitoring_status_probe_up{target}                                1 when the server answered the probe
"""

from typing import Dict, Iterator, List, Optional

from contract import tasks
from monitoring import store as series
from monitoring.store import Store

PROBE_TIMEOUT_SECONDS = 2.0
# Which way is better for each headline metric key (AUC, accuracy: higher; RMSE: lower).
_HIGHER_IS_BETTER = {m.key: m.higher_is_better for name in tasks.TASKS for m in tasks.task(name).quality_metrics}


def direction(metric_key: str) -> str:
    return "higher_is_better" if _HIGHER_IS_BETTER.get(metric_key, True) else "lower_is_better"


class StatusProbe:
    """Which versions models.config asks the server at `target` to serve, and whether each is AVAILABLE."""

    def __init__(self, models_config_path: str, target: str):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc

        self.models_config_path = models_config_path
        self.target = target
        self._channel = grpc.insecure_channel(target)
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel).GetModelStatus

    def wanted(self) -> Dict[str, List[int]]:
        """model -> the versions its entry asks for: specific versions and labels, else the newest on disk."""
        from contract.versions import list_versions
        from serving import model_config

        out = {}
        for model in model_config.read(self.models_config_path).model_config_list.config:
            on_disk = list_versions(model.base_path)
            wanted = set(model_config.versions_to_serve(model, on_disk))
            wanted |= set(model.model_version_policy.specific.versions) | set(model.version_labels.values())
            out[model.name] = sorted(wanted)
        return out

    def states(self) -> Optional[Dict[str, Dict[int, bool]]]:
        """model -> version -> available; None when the server does not answer."""
        import grpc
        from tensorflow_serving.apis import get_model_status_pb2

        out: Dict[str, Dict[int, bool]] = {}
        for name, wanted in self.wanted().items():
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = name
            try:
                response = self._status(request, timeout=PROBE_TIMEOUT_SECONDS)
                available = {s.version for s in response.model_version_status
                             if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE}
            except grpc.RpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    return None
                available = set()  # NOT_FOUND: the server has none of its versions
            out[name] = {version: version in available for version in wanted}
        return out

    def close(self) -> None:
        self._channel.close()


class Collector:
    """A prometheus_client collector: every scrape reads the store and probes the server."""

    def __init__(self, store_path: str, probe: Optional[StatusProbe] = None):
        self.store_path = store_path
        self.probe = probe

    def describe(self):
        return []  # nothing to check at registration: the gauges depend on what the store holds

    def collect(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        def gauge(name: str, text: str, labels: List[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=labels)

        distance = gauge("monitoring_feature_distance", "Skew (vs training) or drift (vs the previous window) "
                         "of a feature in the newest window, TFDV's distance.", ["model_name", "kind", "feature"])
        threshold = gauge("monitoring_feature_threshold", "The schema's skew/drift comparator threshold.",
                          ["model_name", "kind", "feature"])
        served = gauge("monitoring_served_metric", "Headline metric of the served predictions on joined late "
                       "labels (newest window with enough labels).", ["model_name", "metric", "direction"])
        bound = gauge("monitoring_served_metric_bound", "monitoring.metric_bound of the served metric.",
                      ["model_name", "metric", "direction"])
        labels = gauge("monitoring_labels", "Joined late labels of the newest window with labels.", ["model_name"])
        traffic = gauge("monitoring_requests_per_second", "Requests per second of the newest window (from the "
                        "sampled request log).", ["model_name"])
        errors = gauge("monitoring_error_ratio", "Share of failed requests in the newest window.", ["model_name"])
        latency = gauge("monitoring_latency_ms", "Request latency quantiles of the newest window, ms.",
                        ["model_name", "quantile"])
        window = gauge("monitoring_window_start_seconds", "Start of the window each measure's value is of.",
                       ["model_name", "measure"])
        last_run = gauge("monitoring_last_run_timestamp_seconds", "When the monitoring job last ran.",
                         ["model_name"])
        store = Store(self.store_path)
        for model in store.models():
            ran = store.last_run(model)
            if ran is not None:
                last_run.add_metric([model], ran)
            for measure, points in store.latest(model).items():
                window.add_metric([model, measure], points[0].window_start)
                for p in points:
                    if measure in series.FEATURE_MEASURES:
                        distance.add_metric([model, measure, p.feature], p.value)
                        threshold.add_metric([model, measure, p.feature], p.threshold)
                    elif measure == series.SERVED_METRIC:
                        served.add_metric([model, p.feature, direction(p.feature)], p.value)
                        if p.threshold is not None:
                            bound.add_metric([model, p.feature, direction(p.feature)], p.threshold)
                    elif measure == series.LABELS:
                        labels.add_metric([model], p.value)
                    elif measure == series.REQUESTS_PER_SECOND:
                        traffic.add_metric([model], p.value)
                    elif measure == series.ERROR_RATIO:
                        errors.add_metric([model], p.value)
                    elif measure in (series.LATENCY_P50, series.LATENCY_P99):
                        latency.add_metric([model, "0.5" if measure == series.LATENCY_P50 else "0.99"], p.value)
        yield from (distance, threshold, served, bound, labels, traffic, errors, latency, window, last_run)
        if self.probe is not None:
            yield from self._probe()

    def _probe(self) -> Iterator:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("monitoring_status_probe_up", "1 when the server answered GetModelStatus.",
                               labels=["target"])
        available = GaugeMetricFamily("monitoring_model_version_available", "1 when a version models.config "
                                      "asks for is AVAILABLE on the server, else 0.", labels=["model_name", "version"])
        states = self.probe.states()
        up.add_metric([self.probe.target], 0.0 if states is None else 1.0)
        wanted = self.probe.wanted() if states is None else {}
        for name, versions in (states or {}).items():
            for version, ok in versions.items():
                available.add_metric([name, str(version)], 1.0 if ok else 0.0)
        for name, versions in wanted.items():  # the server is down: nothing it should serve is served
            for version in versions:
                available.add_metric([name, str(version)], 0.0)
        yield from (up, available)


def serve(store_path: str, host: str, port: int, probe: Optional[StatusProbe] = None):
    """Starts the exporter's HTTP server (prometheus_client's, on its own thread); returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(store_path, probe))
    server, _ = start_http_server(port, host, registry)
    return server, server.server_port
