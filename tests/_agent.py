"""``runai-uploader agent`` run as a real subprocess, for the agent's tests (the ``start_agent`` fixture)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from typing import Callable

from harness import free_port, job_env, wait_for


class Agent:
    """``runai-uploader agent`` as a subprocess, its stderr in a file, its metrics on a free port."""

    def __init__(
        self, spool_dir: str, gateway: str, log: str, *options: str, preexec: Callable[[], None] | None = None
    ) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uploader",
                    "agent",
                    f"--spool-dir={spool_dir}",
                    f"--gateway={gateway}",
                    f"--metrics-port={self.port}",
                    "--metrics-address=127.0.0.1",
                    *options,
                ],
                env=job_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=preexec,
            )  # a limit set in the child (RLIMIT_NOFILE), say
        wait_for(self._serving, 30, "the agent's metrics endpoint")

    def _serving(self) -> bool:
        assert self.proc.poll() is None, self.stderr()
        try:
            self.scrape()
        except OSError:
            return False
        return True

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the agent's page: (name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def sample(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    def delivered_all(self, pod: str, sink: str = "gateway") -> bool:
        """It delivered *pod* and has nothing of it pending (no pending series: a pod has none at 0)."""
        page = self.scrape()
        return ("runai_uploader_pending_reports", (("podUUID", pod),)) not in page and (
            "runai_uploader_delivered_reports_total",
            (("podUUID", pod), ("sink", sink)),
        ) in page

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; its exit status and how long it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=30)
        return status, time.monotonic() - started

    def stderr(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
