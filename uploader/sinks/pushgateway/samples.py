"""A push's samples: reports as prometheus_client gauges, in runai 0.4.1's names and labels (:mod:`..exposition`)."""

from __future__ import annotations

from typing import Iterator, Sequence

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runai.reporter.spool import Metric as MetricReport  # prometheus_client has a Metric too
from runai.reporter.spool import Report

from ..exposition import exposition_name

__all__ = ["Samples"]

# runai 0.4.1 pushed an empty HELP; the same keeps mixed fleets consistent on
# one gateway (a gateway may refuse one name with two HELP texts).
_HELP = ""


class Samples(Collector):
    """*records* as gauges in the 0.4.1 names and labels, for a push's registry."""

    def __init__(self, records: Sequence[Report]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        for record in self._records:
            if isinstance(record, MetricReport):
                family = GaugeMetricFamily(exposition_name(record), _HELP, labels=("metric_name", "push_gateway_type"))
                family.add_metric((record.name, "metric"), record.value)
            else:
                family = GaugeMetricFamily(
                    exposition_name(record), _HELP, labels=("param_name", "param_value", "push_gateway_type")
                )
                family.add_metric((record.name, str(record.value), "parameter"), 1.0)
            yield family
