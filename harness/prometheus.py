"""A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 that scrapes a :class:`Pushgateway`, and its
HTTP API."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.parse
from typing import Any

from .pushgateway import Pushgateway
from .server import LocalServer, binary
from .waiting import wait_for

__all__ = ["Prometheus"]


class Prometheus(LocalServer):
    """A real Prometheus on 127.0.0.1 that scrapes *gateway* every *scrape_interval* seconds.

    ``honor_labels: true`` is what makes the pushed ``job`` and ``podUUID``
    labels the series' own, as the Pushgateway's documentation asks.
    """

    what = "Prometheus"

    def __init__(self, log_dir: str, gateway: Pushgateway, port: int | None = None,
                 scrape_interval: float = 1.0) -> None:
        super().__init__(log_dir, port)
        self.gateway = gateway
        self.scrape_interval = scrape_interval
        self.config_path = os.path.join(log_dir, f"prometheus-{self.port}.yml")
        self.data_dir = os.path.join(log_dir, f"prometheus-{self.port}-data")

    def command(self) -> list[str]:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        with open(self.config_path, "w") as f:
            f.write(f"""global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{self.gateway.address}"]
""")
        return [binary("prometheus"), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}", f"--web.listen-address={self.address}",
                "--log.level=warn"]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with self._open(f"/api/v1/{path}?{query}") as r:
                answer = json.load(r)
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
            raise RuntimeError(f"Prometheus refused {params}: {exc.read().decode(errors='replace')}") from None
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector *expr* evaluates to now: ``[{"metric": {labels}, "value": [ts, "v"]}, ...]``."""
        data = self._api("query", query=expr)
        if data["resultType"] != "vector":
            raise ValueError(f"{expr!r} is a {data['resultType']}, not an instant vector")
        return data["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, seconds: float) -> list[dict[str, Any]]:
        """*expr* over the last *seconds*, at the scrape interval."""
        end = time.time()
        return self._api("query_range", query=expr, start=end - seconds, end=end,  # type: ignore[no-any-return]
                         step=self.scrape_interval)["result"]

    def wait_until_scraping(self, timeout: float = 30) -> None:
        """Wait for the first scrape of the gateway (Prometheus starts its targets a few seconds late)."""
        wait_for(lambda: self.query('up{job="pushgateway"} == 1'), timeout, f"{self.what} to scrape the gateway")

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return self._api(f"label/{label}/values", **{"match[]": match})  # type: ignore[no-any-return]
