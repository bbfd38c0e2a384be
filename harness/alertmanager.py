"""A real Alertmanager (Debian's ``prometheus-alertmanager``) on 127.0.0.1 whose one receiver is a webhook,
and :class:`Webhook`, a test HTTP server on 127.0.0.1 that keeps what it is sent."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
from typing import Any

from .server import LocalServer, binary

__all__ = ["Alertmanager", "Webhook"]


class Webhook:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it (Alertmanager's webhook payloads)."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        payloads, lock = self.payloads, self._lock

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  # http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    payloads.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # not on the test's stderr

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every payload so far, in arrival order."""
        with self._lock:
            return [alert for payload in self.payloads for alert in payload.get("alerts", [])]

    def __enter__(self) -> Webhook:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


class Alertmanager(LocalServer):
    """A real Alertmanager on 127.0.0.1 that sends every alert to *webhook_url*, without clustering.

    *group_wait* is short (Alertmanager's default is 30 s) so that a test sees a
    new alert within about a second of Prometheus sending it; alerts are grouped
    by name and pod.
    """

    what = "Alertmanager"

    def __init__(self, log_dir: str, webhook_url: str, port: int | None = None, group_wait: str = "200ms") -> None:
        super().__init__(log_dir, port)
        self.webhook_url = webhook_url
        self.group_wait = group_wait
        self.config_path = os.path.join(log_dir, f"alertmanager-{self.port}.yml")
        self.data_dir = os.path.join(log_dir, f"alertmanager-{self.port}-data")

    def command(self) -> list[str]:
        with open(self.config_path, "w") as f:
            f.write(f"""route:
  receiver: webhook
  group_by: [alertname, podUUID]
  group_wait: {self.group_wait}
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: "{self.webhook_url}"
        send_resolved: true
""")
        # --cluster.listen-address= turns gossip off: otherwise it binds 0.0.0.0:9094, one per machine.
        return [
            binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={self.config_path}",
            f"--storage.path={self.data_dir}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
            f"--web.external-url=http://{self.address}",
        ]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
