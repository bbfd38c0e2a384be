"""The real servers and processes tests, benchmarks and the demo run against.

A real Pushgateway, Prometheus, Alertmanager and VictoriaMetrics (Debian's, each a child
process on a free port of 127.0.0.1), a fault-injecting proxy in front of the
gateway, and the helpers that start jobs and find, wait for and kill their
uploader processes.

Standard library only, and independent of the library under test, so that
``scripts/demo.py`` and ``benchmarks/`` can use it as well as ``tests/``. Not
shipped: setup.py lists the packages it installs, and this is not one of them.
"""

from __future__ import annotations

from .alertmanager import Alertmanager, Webhook
from .processes import REPO, job_env, kill_uploaders, process_cpu_seconds, reap_uploaders, uploader_pids
from .prometheus import Prometheus
from .proxy import FaultProxy
from .pushgateway import Pushgateway, metric_name, parameter_name
from .server import free_port
from .victoriametrics import VictoriaMetrics
from .waiting import wait_for

__all__ = [
    "REPO",
    "Alertmanager",
    "FaultProxy",
    "Prometheus",
    "Pushgateway",
    "VictoriaMetrics",
    "Webhook",
    "free_port",
    "job_env",
    "kill_uploaders",
    "metric_name",
    "parameter_name",
    "process_cpu_seconds",
    "reap_uploaders",
    "uploader_pids",
    "wait_for",
]
