"""Prometheus metrics of one worker, served on DIGITQ_METRICS_PORT (off when unset).

    digitq_jobs_total{task,state}            jobs this worker ended, by task and final state
    digitq_epoch_seconds                     histogram of training epoch wall times
    digitq_train_images_per_second           the latest epoch's training throughput
    digitq_predict_images_total              images this worker classified
    digitq_queue_depth{queue}                messages waiting in each queue (read at scrape time)
"""

from __future__ import annotations

import logging

log = logging.getLogger("digitq.worker")

_metrics: dict = {}


def start_metrics_server(port: int, r, queues: list[str]) -> bool:
    """Serve /metrics on `port`; False (with a warning) when prometheus-client is missing."""
    try:
        from prometheus_client import Counter, Gauge, Histogram, start_http_server
        from prometheus_client.core import REGISTRY, GaugeMetricFamily
    except ImportError:
        log.warning("DIGITQ_METRICS_PORT is set but prometheus-client is not installed: no metrics")
        return False

    class QueueDepth:
        def collect(self):
            g = GaugeMetricFamily("digitq_queue_depth", "Messages waiting in a queue", labels=["queue"])
            for q in queues:
                try:
                    g.add_metric([q], float(r.llen(q)))
                except Exception:  # a scrape during a broker blip shows no depth
                    pass
            yield g

    _metrics["jobs"] = Counter("digitq_jobs_total", "Jobs ended by this worker", ["task", "state"])
    _metrics["epoch"] = Histogram("digitq_epoch_seconds", "Training epoch wall time",
                                  buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
    _metrics["ips"] = Gauge("digitq_train_images_per_second", "Latest epoch's training images per second")
    _metrics["predicted"] = Counter("digitq_predict_images_total", "Images classified by this worker")
    REGISTRY.register(QueueDepth())
    start_http_server(port)
    log.info("Prometheus metrics on port %d", port)
    return True


def job_ended(task: str, state: str) -> None:
    if "jobs" in _metrics:
        _metrics["jobs"].labels(task=task, state=state).inc()


def epoch_ended(seconds: float, images_per_second: float | None) -> None:
    if "epoch" in _metrics:
        _metrics["epoch"].observe(seconds)
        if images_per_second:
            _metrics["ips"].set(images_per_second)


def images_predicted(n: int) -> None:
    if "predicted" in _metrics:
        _metrics["predicted"].inc(n)
