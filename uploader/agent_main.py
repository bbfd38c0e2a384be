"""The ``agent`` command's work: logging to stderr, the metrics endpoint, the agent under the signal stopper."""
from __future__ import annotations

import logging
import sys
from typing import Callable

from runai.reporter.settings import Settings, warn_insecure_auth

from .agent import Agent
from .agent_metrics import AgentMetrics
from .factory import raise_open_files_limit
from .logsetup import drop_watchdog_shutdown_noise
from .signals import StopOnSignals

__all__ = ["serve_agent"]

logger = logging.getLogger(__name__)

# One line per event, the container convention (kubectl logs, Fluent Bit): time, level, the pod it is about
# (a delivery runs in a thread named for its pod), the message.
_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(message)s"


class _OneLine(logging.Formatter):
    """A record on one line: a traceback's lines joined with ' | ' instead of newlines."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def serve_agent(settings: Settings, settings_for: Callable[[str], Settings], *, metrics_address: str,
                metrics_port: int | None, max_deliveries: int, grace: float) -> int:
    """Run the agent over *settings*' spool directory until SIGTERM or SIGINT; 0."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine(_FORMAT))
    handler.addFilter(drop_watchdog_shutdown_noise)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    raise_open_files_limit()
    warn_insecure_auth(settings)
    metrics = AgentMetrics()
    if metrics_port is not None:
        port = metrics.serve(metrics_address, metrics_port)
        logger.info("metrics on http://%s:%d/metrics", metrics_address, port)
    agent = Agent(settings.spool_dir, settings_for, settings.sinks, metrics, max_deliveries=max_deliveries,
                  grace=grace)
    try:
        with StopOnSignals() as stopper:
            stopper.watch(agent)
            status = agent.run()
        if stopper.signum is not None:
            logger.info("stopped by signal %d", stopper.signum)
        return status
    finally:
        metrics.close()
