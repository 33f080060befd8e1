"""Prometheus metrics of the local server, under TF Serving's names where TF Serving has one.

Served on the REST port at `/monitoring/prometheus/metrics` (TF Serving's path),
written by prometheus_client (the maintained client: exposition format, label
escaping and multi-process aggregation are its job, not ours). TF Serving's own
metric names and labels, from its source (`servables/tensorflow/util.cc`,
`batching/batching_util.h`, `core/request_logger.cc`, TF's SavedModel loader):

- `:tensorflow:serving:request_count{model_name,status}`
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}` (microseconds, OK requests)
- `:tensorflow:serving:request_example_counts{model}` / `request_example_count_total{model}`
- `:tensorflow:serving:batching_session:input_batch_size`, `processed_batch_size`,
  `queuing_latency{thread_pool_name}`, `wrapped_run_count`
- `:tensorflow:serving:request_log_count{model_name,status_code}`
- `:tensorflow:serving:model_warmup_latency{model_path,status}`
- `:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`, `load_latency{model_path}`

prometheus_client writes a counter's samples with the `_total` suffix that the
Prometheus naming rules require (`:tensorflow:serving:request_count_total`);
TF Serving's C++ exporter writes them without it. `serving/grafana_queries.md`
gives queries that match both.

Ours, for what TF Serving does not break down: `serving_requests` and
`serving_request_latency_seconds` per version and version label (and the arm of
an experiment), `serving_batch_queue_depth`, `serving_request_log_examples`,
`serving_model_versions_loaded`, `serving_model_events` (load, unload, failed
load), `serving_shadow_requests`.

With several worker processes (`serving.workers`), every process writes its
values to files under `PROMETHEUS_MULTIPROC_DIR` and a scrape of any worker
returns the sum over all of them (prometheus_client's multiprocess mode).
"""

import os
from typing import Iterable, List

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client import multiprocess

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default path, on the REST port
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _exponential(scale: float, growth: float, count: int) -> List[float]:
    """TF's monitoring::Buckets::Exponential bucket limits (the last bucket is +Inf)."""
    return [scale * growth ** i for i in range(count - 1)]


# TF Serving's buckets: request latency 10 us x 1.8^i (33 buckets, ~20 minutes); batch sizes 1 x 2^i (14);
# queuing latency 100 us x 1.2^i (52, ~1 second).
LATENCY_MICROS_BUCKETS = _exponential(10, 1.8, 33)
BATCH_SIZE_BUCKETS = _exponential(1, 2, 14)
QUEUING_MICROS_BUCKETS = _exponential(100, 1.2, 52)
SECONDS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServingMetrics:
    """Every metric of one server, in its own registry (several servers can live in one test process)."""

    def __init__(self):
        # TF Serving exports no `_created` series; neither do we (a process-wide prometheus_client switch).
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_count = Counter(":tensorflow:serving:request_count", "The total number of requests.",
                                     ["model_name", "status"], registry=r)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=LATENCY_MICROS_BUCKETS, registry=r)
        self.example_counts = Histogram(":tensorflow:serving:request_example_counts",
                                        "The number of tensorflow.Examples per request.", ["model"],
                                        buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.example_count_total = Counter(":tensorflow:serving:request_example_count_total",
                                           "The total number of tensorflow.Examples.", ["model"], registry=r)
        self.input_batch_size = Histogram(":tensorflow:serving:batching_session:input_batch_size",
                                          "Tracks the batch size distribution on the inputs.",
                                          buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.processed_batch_size = Histogram(":tensorflow:serving:batching_session:processed_batch_size",
                                              "Tracks the batch size distribution on processing.",
                                              buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.queuing_latency = Histogram(":tensorflow:serving:batching_session:queuing_latency",
                                         "Distribution of wall time spent (in microseconds) in queuing",
                                         ["thread_pool_name"], buckets=QUEUING_MICROS_BUCKETS, registry=r)
        self.wrapped_run_count = Counter(":tensorflow:serving:batching_session:wrapped_run_count",
                                         "Total count of run calls on the wrapped session", registry=r)
        self.request_log_count = Counter(
            ":tensorflow:serving:request_log_count",
            "The total number of requests logged from the model server sliced down by model_name and status code.",
            ["model_name", "status_code"], registry=r)
        self.warmup_latency = Histogram(":tensorflow:serving:model_warmup_latency",
                                        "Distribution of wall time (in microseconds) for warming up the model.",
                                        ["model_path", "status"], buckets=LATENCY_MICROS_BUCKETS, registry=r)
        self.load_attempt_count = Counter(":tensorflow:cc:saved_model:load_attempt_count",
                                          "The number of times a SavedModel was successfully loaded.",
                                          ["model_path", "status"], registry=r)
        self.load_latency = Counter(":tensorflow:cc:saved_model:load_latency",
                                    "Latency in microseconds for SavedModels that were successfully loaded.",
                                    ["model_path"], registry=r)

        self.requests = Counter("serving_requests", "Requests by model, version, version label and arm.",
                                ["model_name", "version", "version_label", "api", "entrypoint", "status"],
                                registry=r)
        self.latency = Histogram("serving_request_latency_seconds", "Request latency by version and label.",
                                 ["model_name", "version", "version_label", "api", "entrypoint"],
                                 buckets=SECONDS_BUCKETS, registry=r)
        self.queue_depth = Gauge("serving_batch_queue_depth", "Requests waiting in the batching queues.",
                                 ["model_name", "version", "signature"], multiprocess_mode="livesum", registry=r)
        self.request_log_examples = Counter("serving_request_log_examples",
                                            "tf.Examples written to the sampled request logs.", ["model_name"],
                                            registry=r)
        self.versions_loaded = Gauge("serving_model_versions_loaded",
                                     "Worker processes that have this version loaded.", ["model_name", "version"],
                                     multiprocess_mode="livesum", registry=r)
        self.model_events = Counter("serving_model_events", "Version loads, unloads and failed loads.",
                                    ["model_name", "version", "event"], registry=r)
        self.shadow_requests = Counter("serving_shadow_requests",
                                       "Requests also sent to a shadow version (answer logged, not returned).",
                                       ["model_name", "version_label", "status"], registry=r)

    def observe_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float,
                        version: str = "", label: str = "") -> None:
        """One finished request, in TF Serving's metrics (latency of OK requests only, as it does) and ours."""
        self.request_count.labels(model_name, status).inc()
        self.requests.labels(model_name, version, label, api, entrypoint, status).inc()
        if status == "OK":
            self.request_latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)
            self.latency.labels(model_name, version, label, api, entrypoint).observe(seconds)

    def observe_examples(self, model_name: str, count: int) -> None:
        self.example_counts.labels(model_name).observe(count)
        self.example_count_total.labels(model_name).inc(count)

    def observe_batch(self, pool: str, request_sizes: Iterable[int], queued_seconds: Iterable[float]) -> None:
        """One merged model call: the size of each request in it and how long each waited in the queue."""
        sizes = list(request_sizes)
        for size in sizes:
            self.input_batch_size.observe(size)
        self.processed_batch_size.observe(sum(sizes))
        self.wrapped_run_count.inc()
        queuing = self.queuing_latency.labels(pool)
        for seconds in queued_seconds:
            queuing.observe(seconds * 1e6)

    def exposition(self) -> bytes:
        """The text page; with worker processes, the sum over all of them."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
