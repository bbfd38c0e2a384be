"""runai 0.4.1's wire format, which both sinks keep: the names and labels, and a size estimate.

Dashboards built on runai 0.4.1 read exactly these names, so they must not
change:

* group ``job="reporter_pod_info"``, grouping key ``podUUID=<pod>``;
* metric ``<name>``: gauge ``reporter_push_gateway_metric_<name>`` with labels
  ``metric_name=<name>``, ``push_gateway_type="metric"``;
* parameter ``<name>``: gauge ``reporter_push_gateway_parameter_<name>`` with
  labels ``param_name=<name>``, ``param_value=<value>``,
  ``push_gateway_type="parameter"``, value 1.

Standard library only: the gateway sink's collector is :mod:`.pushgateway.samples`,
and the remote-write sink labels its series with the same names.
"""

from __future__ import annotations

import re

from runai.reporter.spool import METRIC, Report

__all__ = ["JOB", "METRIC_PREFIX", "PARAMETER_PREFIX", "encoded_size", "exposition_name"]

JOB = "reporter_pod_info"
METRIC_PREFIX = "reporter_push_gateway_metric_"
PARAMETER_PREFIX = "reporter_push_gateway_parameter_"
_EXPOSITION_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exposition_name(record: Report) -> str:
    return (METRIC_PREFIX if record.kind == METRIC else PARAMETER_PREFIX) + record.name


def encoded_size(record: Report) -> int:
    """An upper bound of *record*'s bytes in a push; ValueError if it cannot be encoded at all."""
    name = exposition_name(record)
    if not _EXPOSITION_NAME.fullmatch(name):
        raise ValueError(f"not sent: {ascii(name)} is not a valid Prometheus metric name")
    try:
        value = str(record.value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not sent: its value cannot be encoded as UTF-8 ({exc.reason} at character {exc.start}; "
            "undecodable bytes, as os.fsdecode() gives them, do that)"
        ) from None
    # The name three times (HELP, TYPE, sample), the label values escaped
    # (at most doubled), and the fixed text of the lines.
    return 3 * len(name) + 2 * (len(record.name) + len(value)) + 128
