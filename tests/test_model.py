"""A model-based test: random reports, writer kills, uploader kills and restarts, and
gateway outages. Once everything settles, the gateway must hold the last complete
report of each name, and nothing else."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
import uuid

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from harness import FaultProxy, Pushgateway, metric_name, parameter_name
from runai.reporter.spool import SpoolWriter, encode_metric
from uploader.delivery import DeliveryOptions
from uploader.delivery.service import EXIT_DELIVERED, Uploader
from uploader.sinks.pushgateway import Pusher

pytestmark = pytest.mark.e2e

NAMES = st.sampled_from(["loss", "acc", "lr", "x_1"])
METRIC_VALUES = st.floats(allow_nan=True, allow_infinity=True, width=64)
# Label values: any text the exposition format can carry (quotes, backslashes,
# newlines and unicode included); other control characters are left out.
PARAMETER_VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from('\n"\\'), max_size=20)


class Pipeline(RuleBasedStateMachine):
    gateway: Pushgateway  # set by the test below

    def __init__(self) -> None:
        super().__init__()
        self.pod = f"model-{uuid.uuid4()}"
        self.work = tempfile.mkdtemp(prefix="runai-model-")
        self.pod_dir = os.path.join(self.work, self.pod)
        self.proxy = FaultProxy(self.gateway.address).start()
        self.writers: list[SpoolWriter] = []
        self.expected: dict[tuple[str, str], object] = {}  # last complete report per (kind, name)
        self.uploader: Uploader | None = None
        self.thread: threading.Thread | None = None

    # -- writers ---------------------------------------------------------------

    @precondition(lambda self: len(self.writers) < 3)
    @rule()
    def start_writer(self) -> None:
        self.writers.append(SpoolWriter(self.pod_dir, self.pod))

    @precondition(lambda self: self.writers)
    @rule(index=st.integers(0, 2), name=NAMES, value=METRIC_VALUES)
    def report_metric(self, index: int, name: str, value: float) -> None:
        self.writers[index % len(self.writers)].write_metric(name, value)
        self.expected[("metric", name)] = value

    @precondition(lambda self: self.writers)
    @rule(index=st.integers(0, 2), name=NAMES, value=PARAMETER_VALUES)
    def report_parameter(self, index: int, name: str, value: str) -> None:
        self.writers[index % len(self.writers)].write_parameter(name, value)
        self.expected[("parameter", name)] = value

    @precondition(lambda self: self.writers)
    @rule(index=st.integers(0, 2), torn=st.booleans(), name=NAMES)
    def kill_writer(self, index: int, torn: bool, name: str) -> None:
        # As SIGKILL leaves it: no end marker, maybe half a record, lock gone.
        writer = self.writers.pop(index % len(self.writers))
        if torn:
            line = encode_metric(10**9, 0, name, 12345.0)
            os.write(writer._fd, line[: len(line) // 2])  # this report never returned: not expected
        writer._close_fd()
        writer.closed = True

    @precondition(lambda self: self.writers)
    @rule(index=st.integers(0, 2))
    def finish_writer(self, index: int) -> None:
        self.writers.pop(index % len(self.writers)).close()

    # -- the uploader and the gateway ---------------------------------------------

    @precondition(lambda self: self.thread is None and os.path.isdir(self.pod_dir))
    @rule()
    def start_uploader(self) -> None:
        self.uploader = Uploader(
            self.pod_dir,
            Pusher(f"http://{self.proxy.address}", self.pod, timeout=2),
            DeliveryOptions(push_interval=0.05, poll_interval=0.05, backoff=(0.01, 0.05), use_watchdog=False),
        )
        self.thread = threading.Thread(target=self.uploader.run, name="model-uploader")
        self.thread.start()

    @precondition(lambda self: self.thread is not None)
    @rule()
    def kill_uploader(self) -> None:
        self._stop_uploader()

    @rule()
    def gateway_down(self) -> None:
        self.proxy.refuse()

    @rule()
    def gateway_up(self) -> None:
        self.proxy.heal()

    def _stop_uploader(self) -> None:
        if self.uploader is not None and self.thread is not None:
            self.uploader.stop()
            self.thread.join(10)
            assert not self.thread.is_alive()
        self.uploader, self.thread = None, None

    @invariant()
    def no_garbage_on_the_gateway(self) -> None:
        # At any moment, only names that were reported may be there.
        for name in self.gateway.series(self.pod):
            assert any(name == _exposed(kind, n) for kind, n in self.expected), name

    # -- settle and check ----------------------------------------------------------

    def teardown(self) -> None:
        try:
            self._stop_uploader()
            self.proxy.heal()
            for writer in self.writers:
                writer.close()
            if os.path.isdir(self.pod_dir):
                recovery = Uploader(
                    self.pod_dir,
                    Pusher(f"http://{self.proxy.address}", self.pod),
                    DeliveryOptions(follow=False, use_watchdog=False, retry_timeout=20),
                )
                assert recovery.run() == EXIT_DELIVERED
                assert not recovery.rejected
            series = self.gateway.series(self.pod)
            assert set(series) == {_exposed(kind, name) for kind, name in self.expected}
            for (kind, name), value in self.expected.items():
                labels, got = series[_exposed(kind, name)]
                if kind == "parameter":
                    assert labels["param_value"] == value and got == 1
                elif math.isnan(value):  # type: ignore[arg-type]
                    assert math.isnan(got)
                else:
                    assert got == value
        finally:
            self.proxy.stop()
            shutil.rmtree(self.work, ignore_errors=True)


def _exposed(kind: str, name: str) -> str:
    return metric_name(name) if kind == "metric" else parameter_name(name)


def test_the_pipeline_delivers_the_last_complete_report_of_each_name(gateway: Pushgateway) -> None:
    Pipeline.gateway = gateway
    run_state_machine_as_test(
        Pipeline,
        settings=settings(
            max_examples=12, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        ),
    )
