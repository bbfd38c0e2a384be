"""The node agent's own metrics, served with ``prometheus_client`` for Prometheus to scrape.

A registry of its own (not the process-wide default), so that nothing else a
library registers there ends up on the agent's page, and a test can build two.
A pod has series only while it has something to say: its pending gauges while
something is pending (none at 0), its delivered counters while the agent
delivers it and for :data:`~.config.SERIES_LINGER_SECONDS` after it is idle
(long enough for two scrapes to see its final count). 200,000 empty pod
directories once made 400,000 series and 600 MB of the agent's memory; now
they make none, and the page stays a few KB however many idle pods there are.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Mapping, Sequence

from .config import SERIES_LINGER_SECONDS
from .endpoint import Heartbeat, MetricsServer
from .schedule import IDLE, QUEUED, REFUSED, TAKEN

__all__ = ["AgentMetrics", "PodHooks"]


class AgentMetrics:
    """The series the agent exports (docs/agent.md lists them); thread-safe, as prometheus_client's are."""

    def __init__(self) -> None:
        # Imported here: the command line's --help and argument errors need no prometheus_client.
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry = CollectorRegistry()

        # Every series is runai_uploader_<name> (docs/agent.md lists them).
        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(f"runai_uploader_{name}", doc, labels, registry=registry)

        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"runai_uploader_{name}", doc, labels, registry=registry)  # the page adds _total

        self.pending_reports = gauge(
            "pending_reports", "reports on disk not yet delivered to every configured sink", "podUUID"
        )
        self.pending_bytes = gauge("pending_bytes", "spool bytes not yet delivered", "podUUID")
        self.delivered = counter("delivered_reports", "reports this agent delivered", "podUUID", "sink")
        self.push_failures = counter("push_failures", "pushes of this agent that failed (retried)", "sink")
        self.last_success = gauge(
            "last_success_timestamp_seconds",
            "when this agent last pushed a pod's reports successfully (Unix time)",
            "podUUID",
            "sink",
        )
        self.pods = gauge("pods", "pod directories the agent follows")
        self.untracked = gauge(
            "untracked_pods", "pod directories past --max-pods-per-owner: not followed (see the agent's log)"
        )
        # Refused pods have no pending series (they cannot be read safely, or their name cannot be a label):
        # this is what an alert sees of them. The agent's log says why, once per pod.
        self.refused = gauge(
            "refused_pods", "pod directories the agent cannot deliver (unsafe, a bad name, failing): see its log"
        )
        # Totals over pods, cheap to read whatever their number (a scrape can ask for these alone, with
        # /metrics?name[]=runai_uploader_idle_pods): how far a catch-up is, and what it costs.
        self.idle = gauge("idle_pods", "pod directories with everything delivered and no writer alive")
        self.queued = gauge("queued_pods", "pods free to deliver, waiting for a delivery slot")
        self.delivering = gauge("delivering_pods", "pods the agent is delivering now")
        self.watched = gauge("watched_pods", "idle pods watched for new files (the others are polled)")
        self.judged = counter("judged_pods", "times the agent judged a pod from its files")
        self._sinks: dict[str, set[str]] = {}  # pod -> the sinks it has series for (to remove them)
        self._retiring: OrderedDict[str, float] = OrderedDict()  # idle pod -> when its series go, in that order
        self._lock = threading.Lock()
        self.heartbeat = Heartbeat()  # the main loop beats it each turn; /healthz answers 503 when it is stale
        self._server: MetricsServer | None = None

    # -- updates (any thread) ------------------------------------------------

    def set_pending(self, pod: str, reports: int, size: int) -> None:
        """The pod's pending gauges; nothing pending: none (an idle pod costs no series)."""
        if reports or size:
            self.pending_reports.labels(pod).set(reports)
            self.pending_bytes.labels(pod).set(size)
        else:
            _remove(self.pending_reports, pod)
            _remove(self.pending_bytes, pod)

    def pod_idle(self, pod: str, now: float) -> None:
        """*pod* is idle at *now* (monotonic): its delivered series go :data:`SERIES_LINGER_SECONDS` later
        (:meth:`sweep`), unless it is delivered again meanwhile."""
        with self._lock:
            if pod in self._sinks and pod not in self._retiring:
                self._retiring[pod] = now + SERIES_LINGER_SECONDS

    def sweep(self, now: float) -> None:
        """Remove the series of the pods idle for :data:`SERIES_LINGER_SECONDS` by *now*."""
        with self._lock:
            while self._retiring and next(iter(self._retiring.values())) <= now:
                self._forget(self._retiring.popitem(last=False)[0])

    # Under the lock, with the series they note: a sweep in between would leave a series it never removes.
    def add_delivered(self, pod: str, sink: str, reports: int) -> None:
        with self._lock:
            self._note(pod, sink)
            self.delivered.labels(pod, sink).inc(reports)

    def push_succeeded(self, pod: str, sink: str) -> None:
        with self._lock:
            self._note(pod, sink)
            self.last_success.labels(pod, sink).set(time.time())

    def push_failed(self, sink: str) -> None:
        self.push_failures.labels(sink).inc()

    def set_states(self, states: Mapping[str, int], watched: int) -> None:
        """The gauges of pods by state, from the agent's counts (by :mod:`.schedule`'s state names)."""
        self.watched.set(watched)
        self.refused.set(states.get(REFUSED, 0))
        self.idle.set(states.get(IDLE, 0))
        self.queued.set(states.get(QUEUED, 0))
        self.delivering.set(states.get(TAKEN, 0))

    def forget(self, pod: str) -> None:
        """Remove every series of *pod* (its directory is gone, or it is idle)."""
        with self._lock:
            self._forget(pod)
        for gauge in (self.pending_reports, self.pending_bytes):
            _remove(gauge, pod)

    def _forget(self, pod: str) -> None:
        self._retiring.pop(pod, None)
        for sink in self._sinks.pop(pod, set()):
            _remove(self.delivered, pod, sink)
            _remove(self.last_success, pod, sink)

    def _note(self, pod: str, sink: str) -> None:
        self._sinks.setdefault(pod, set()).add(sink)
        self._retiring.pop(pod, None)  # delivered again: not idle

    # -- the endpoint ----------------------------------------------------------

    def serve(self, address: str, port: int) -> int:
        """Serve ``/metrics`` and ``/healthz`` on *address*:*port* (0: a free one) in a daemon thread (see
        :mod:`.endpoint`); the port it listens on."""
        self._server = MetricsServer(address, port, self.render, self.heartbeat)
        return self._server.port

    def render(self, accept: str, names: Sequence[str] = ()) -> tuple[bytes, str]:
        """The page, in the format *accept* (an Accept header) asks for, and its content type; only the series
        *names* where given (``/metrics?name[]=...``, as prometheus_client's own server does: a cheap poll)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry.restricted_registry(names) if names else self.registry), content_type

    def close(self) -> None:
        """Stop serving (safe to call twice)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()


class PodHooks:
    """One pod's delivery hooks (a :class:`~uploader.delivery.DeliveryHooks`): its pushes and reports counted."""

    def __init__(self, metrics: AgentMetrics, pod: str) -> None:
        self._metrics = metrics
        self._pod = pod

    def pushed(self, sink: str) -> None:
        self._metrics.push_succeeded(self._pod, sink)

    def push_failed(self, sink: str) -> None:
        self._metrics.push_failed(sink)

    def delivered(self, sink: str, reports: int) -> None:
        self._metrics.add_delivered(self._pod, sink, reports)


def _remove(metric: Any, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass  # never set for this pod
