"""The Pushgateway sink: the latest value of each name, pushed in runai 0.4.1's names and labels.

Importing it imports prometheus_client (the push itself is its ``pushadd_to_gateway``).
"""

from __future__ import annotations

from ..exposition import JOB, METRIC_PREFIX, PARAMETER_PREFIX, exposition_name
from .sink import MAX_ANSWER_BYTES, MAX_PUSH_BYTES, MAX_PUSH_VALUES, GatewayError, Pusher

__all__ = [
    "GatewayError",
    "JOB",
    "MAX_ANSWER_BYTES",
    "MAX_PUSH_BYTES",
    "MAX_PUSH_VALUES",
    "METRIC_PREFIX",
    "PARAMETER_PREFIX",
    "Pusher",
    "exposition_name",
]
