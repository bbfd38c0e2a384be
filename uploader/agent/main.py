"""The ``agent`` command's work: logging to stderr, the metrics endpoint, the agent under the signal stopper."""

from __future__ import annotations

import logging
from typing import Callable

from runai.reporter.settings import Settings, warn_insecure_auth

from ..runtime.limits import raise_open_files_limit
from ..runtime.logsetup import log_lines_to_stderr
from ..runtime.signals import StopOnSignals
from .config import MAX_PODS_PER_OWNER
from .metrics import AgentMetrics
from .pods import Agent

__all__ = ["serve_agent"]

logger = logging.getLogger(__name__)


def serve_agent(
    settings: Settings,
    settings_for: Callable[[str], Settings],
    *,
    metrics_address: str,
    metrics_port: int | None,
    max_deliveries: int,
    max_deliveries_per_owner: int = 0,
    grace: float,
    max_pods_per_owner: int = MAX_PODS_PER_OWNER,
    any_receiver: bool = False,
) -> int:
    """Run the agent over *settings*' spool directory until SIGTERM or SIGINT; 0."""
    log_lines_to_stderr()
    raise_open_files_limit()
    warn_insecure_auth(settings)
    metrics = AgentMetrics()
    if metrics_port is not None:
        port = metrics.serve(metrics_address, metrics_port)
        logger.info("metrics on http://%s:%d/metrics", metrics_address, port)
    agent = Agent(
        settings.spool_dir,
        settings_for,
        settings.sinks,
        metrics,
        max_deliveries=max_deliveries,
        max_deliveries_per_owner=max_deliveries_per_owner,
        max_pods_per_owner=max_pods_per_owner,
        grace=grace,
        any_receiver=any_receiver,
    )
    try:
        with StopOnSignals() as stopper:
            stopper.watch(agent)
            status = agent.run()
        if stopper.signum is not None:
            logger.info("stopped by signal %d", stopper.signum)
        return status
    finally:
        metrics.close()
