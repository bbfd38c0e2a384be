"""A real VictoriaMetrics single node (Debian's ``victoria-metrics``) on 127.0.0.1, taking remote writes,
and the raw samples it holds."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from typing import Any

from .server import LocalServer, binary

__all__ = ["VictoriaMetrics"]

_VALUES = re.compile(r'"values":\[[^]]*\]')


def _json_infinities(values: re.Match[str]) -> str:
    return values.group(0).replace("+Inf", "Infinity").replace("-Inf", "-Infinity")


class VictoriaMetrics(LocalServer):
    """A real VictoriaMetrics single node on 127.0.0.1; remote writes go to :attr:`write_url`.

    *dedup* (say ``"1ms"``) is its ``-dedup.minScrapeInterval``: without it, it
    keeps every copy of a sample sent twice. The retention is 100 years, so that
    tests may write samples of any age it accepts.
    """

    what = "VictoriaMetrics"

    def __init__(self, log_dir: str, port: int | None = None, dedup: str | None = None) -> None:
        super().__init__(log_dir, port)
        self.dedup = dedup
        self.data_dir = os.path.join(log_dir, f"victoria-metrics-{self.port}-data")

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def command(self) -> list[str]:
        return [
            binary("victoria-metrics"),
            f"-httpListenAddr={self.address}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
            *([f"-dedup.minScrapeInterval={self.dedup}"] if self.dedup else []),
        ]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def force_flush(self) -> None:
        """Make what was written searchable now (VictoriaMetrics shows a new series about 10 s late)."""
        self._open("/internal/force_flush").close()

    def own_metric(self, series: str) -> float:
        """The value of *series* (say ``vm_deduplicated_samples_total{type="merge"}``) on its ``/metrics``."""
        with self._open("/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.rsplit(" ", 1)[1])
        raise KeyError(f"{self.what} does not show {series}")

    def export(self, selector: str) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """The raw samples of *selector*, from ``/api/v1/export``: ``[(labels, [(ms, value), ...]), ...]``,
        one per series, each in time order."""
        query = urllib.parse.urlencode({"match[]": selector, "start": "0"})
        out = []
        with self._open(f"/api/v1/export?{query}") as r:
            for line in r.read().decode().splitlines():
                # Values are JSON numbers but for the infinities, written +Inf and -Inf.
                series: dict[str, Any] = json.loads(_VALUES.sub(_json_infinities, line))
                samples = zip(series["timestamps"], map(float, series["values"]), strict=True)
                out.append((series["metric"], sorted(samples)))
        return out
