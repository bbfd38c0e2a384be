"""A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 that scrapes a :class:`Pushgateway`, or takes
remote writes, or both, and may evaluate rule files and send alerts to an Alertmanager; and its HTTP API."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import time
import urllib.error
import urllib.parse
from typing import Any, Sequence

from .pushgateway import Pushgateway
from .server import LocalServer, binary
from .waiting import wait_for

__all__ = ["Prometheus"]


class Prometheus(LocalServer):
    """A real Prometheus on 127.0.0.1 that scrapes *gateway* (if any) every *scrape_interval* seconds.

    ``honor_labels: true`` is what makes the pushed ``job`` and ``podUUID``
    labels the series' own, as the Pushgateway's documentation asks.

    With *remote_write* it also takes remote writes at :attr:`write_url`
    (``--web.enable-remote-write-receiver``); *out_of_order_window* (say
    ``"1h"``) is its ``storage.tsdb.out_of_order_time_window``, without which
    it refuses samples older than its newest ones.

    *rule_files* are loaded and evaluated every *scrape_interval* too; firing
    alerts go to the Alertmanager at *alertmanager* (``host:port``), if given.
    """

    what = "Prometheus"

    def __init__(
        self,
        log_dir: str,
        gateway: Pushgateway | None = None,
        port: int | None = None,
        scrape_interval: float = 1.0,
        remote_write: bool = False,
        out_of_order_window: str | None = None,
        web_config: str | None = None,
        ca_file: str | None = None,
        auth: tuple[str, str] | None = None,
        rule_files: Sequence[str] = (),
        alertmanager: str | None = None,
    ) -> None:
        super().__init__(log_dir, port)
        self.rule_files = list(rule_files)
        self.alertmanager = alertmanager
        self.gateway = gateway
        self.scrape_interval = scrape_interval
        self.remote_write = remote_write
        self.out_of_order_window = out_of_order_window
        # With *web_config*, ``--web.config.file`` (TLS, basic auth), as for the Pushgateway.
        self.web_config = web_config
        self.scheme = "https" if ca_file else "http"
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._auth = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None
        self.config_path = os.path.join(log_dir, f"prometheus-{self.port}.yml")
        self.data_dir = os.path.join(log_dir, f"prometheus-{self.port}-data")

    @property
    def write_url(self) -> str:
        """Where remote writes go (with *remote_write*)."""
        return f"{self.url}/api/v1/write"

    def command(self) -> list[str]:
        with open(self.config_path, "w") as f:
            f.write(self._config())
        return [
            binary("prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
            *(["--web.enable-remote-write-receiver"] if self.remote_write else []),
            *([f"--web.config.file={self.web_config}"] if self.web_config else []),
        ]

    def _config(self) -> str:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        config = f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
        if self.gateway is not None:
            config += f"""scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{self.gateway.address}"]
"""
        if self.rule_files:
            config += "rule_files:\n" + "".join(f"  - {json.dumps(path)}\n" for path in self.rule_files)
        if self.alertmanager:
            config += f"""alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{self.alertmanager}"]
"""
        if self.out_of_order_window:
            config += f"storage:\n  tsdb:\n    out_of_order_time_window: {self.out_of_order_window}\n"
        return config

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

    def samples(self, selector: str, at: float) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
        """The raw samples of a range selector such as ``x{podUUID="p"}[1h]``, evaluated at *at* (s):
        ``[(labels, [(ms, value), ...]), ...]``, one per series, each in time order."""
        data = self._api("query", query=selector, time=f"{at:.3f}")
        if data["resultType"] != "matrix":
            raise ValueError(f"{selector!r} is a {data['resultType']}, not a range vector")
        return [
            (series["metric"], [(round(float(t) * 1000), float(v)) for t, v in series["values"]])
            for series in data["result"]
        ]

    def query_range(self, expr: str, seconds: float) -> list[dict[str, Any]]:
        """*expr* over the last *seconds*, at the scrape interval."""
        end = time.time()
        return self._api(
            "query_range",
            query=expr,
            start=end - seconds,
            end=end,  # type: ignore[no-any-return]
            step=self.scrape_interval,
        )["result"]

    def wait_until_scraping(self, timeout: float = 30) -> None:
        """Wait for the first scrape of the gateway (Prometheus starts its targets a few seconds late)."""
        assert self.gateway is not None, "this Prometheus scrapes no gateway"
        wait_for(lambda: self.query('up{job="pushgateway"} == 1'), timeout, f"{self.what} to scrape the gateway")

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return self._api(f"label/{label}/values", **{"match[]": match})  # type: ignore[no-any-return]
