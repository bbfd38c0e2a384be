"""A real Pushgateway (Debian's ``prometheus-pushgateway``) on 127.0.0.1, and the series names the reporter
pushes to it."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
from typing import Any

from .server import LocalServer, binary

__all__ = ["Pushgateway", "metric_name", "parameter_name"]


def metric_name(name: str) -> str:
    return f"reporter_push_gateway_metric_{name}"


def parameter_name(name: str) -> str:
    return f"reporter_push_gateway_parameter_{name}"


class Pushgateway(LocalServer):
    """A real Pushgateway on 127.0.0.1, without persistence.

    With *web_config* it runs with ``--web.config.file`` (TLS, basic auth); then
    *ca_file* and *auth* are what this helper itself uses to talk to it.
    """

    what = "Pushgateway"

    def __init__(
        self,
        log_dir: str,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        web_config: str | None = None,
        ca_file: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(log_dir, port)
        self.extra_args = extra_args + ((f"--web.config.file={web_config}",) if web_config else ())
        self.scheme = "https" if ca_file else "http"
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._auth = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None

    def command(self) -> list[str]:
        return [
            binary("prometheus-pushgateway", "pushgateway"),
            f"--web.listen-address={self.address}",
            "--persistence.file=",
            *self.extra_args,
        ]

    def groups(self) -> list[dict[str, Any]]:
        with self._open("/api/v1/metrics") as r:
            return json.load(r)["data"]  # type: ignore[no-any-return]

    def series(self, pod_uuid: str) -> dict[str, tuple[dict[str, str], float]]:
        """{metric name: (labels, value)} of the pod's group, as the gateway holds it."""
        out: dict[str, tuple[dict[str, str], float]] = {}
        for group in self.groups():
            if group["labels"].get("podUUID") != pod_uuid:
                continue
            for name, family in group.items():
                if isinstance(family, dict) and "metrics" in family and name.startswith("reporter_"):
                    for metric in family["metrics"]:
                        out[name] = (metric["labels"], float(metric["value"]))
        return out

    def value(self, pod_uuid: str, name: str) -> float | None:
        got = self.series(pod_uuid).get(name)
        return None if got is None else got[1]

    def delete_group(self, pod_uuid: str) -> None:
        self._open(f"/metrics/job/reporter_pod_info/podUUID/{pod_uuid}", method="DELETE").close()

    def push_text(self, path: str, text: str) -> int:
        try:
            with self._open(f"/metrics/{path}", method="POST", data=text.encode()) as r:
                return r.status  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return exc.code

    def exposition(self) -> str:
        """The gateway's ``/metrics`` page, as Prometheus scrapes it."""
        with self._open("/metrics") as r:
            return r.read().decode()  # type: ignore[no-any-return]
