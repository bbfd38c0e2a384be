"""The remote-write sink against a real VictoriaMetrics single node (Debian's ``victoria-metrics``), and what each
receiver keeps of unusual values."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from harness import Prometheus, VictoriaMetrics, wait_for
from runai.reporter.spool import Metric
from tests._remote_write import LOSS, LOSS_LABELS, POD, assert_twelve_digits, expected, exported, losses
from uploader.sinks.remote_write import ReceiverError, RemoteWriter

pytestmark = pytest.mark.e2e


def test_victoriametrics_holds_all_1000_reports_at_their_own_times(victoria: VictoriaMetrics) -> None:
    records = losses(1000, time.time() - 200, step=0.2)
    writer = RemoteWriter(victoria.write_url, POD)
    assert writer.push(records) == []
    # Measured: after a force_flush the series shows at once, but 1 or 2 of the 1,000 samples may take
    # up to about 0.6 s more (without it, about 10 s for all).
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == len(records), 10, "all 1,000 samples in the export")
    [(labels, samples)] = victoria.export(LOSS)
    assert labels == LOSS_LABELS
    assert_twelve_digits(samples, expected(records))


def test_what_each_receiver_keeps_of_unusual_values(strict_prometheus: Prometheus, victoria: VictoriaMetrics) -> None:
    now = time.time()
    values = [1.0, math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2]
    records = [Metric(i, now - 10 + i, "metric", "loss", value) for i, value in enumerate(values)]
    for server in (strict_prometheus, victoria):
        assert RemoteWriter(server.write_url, POD).push(records) == []
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert [(t, str(v)) for t, v in samples] == [(t, str(v)) for t, v in expected(records)]  # every bit
    # Measured: VictoriaMetrics drops NaN silently and keeps about 12 significant digits, fewer for a
    # value much smaller than others near it (0.123456789 beside 1e12 came back as 0.123456).
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == len(values) - 1, 10, "the samples in the export")
    [(_, kept)] = victoria.export(LOSS)
    assert [t for t, _ in kept] == [t for t, v in expected(records) if not math.isnan(v)]
    assert [v for _, v in kept] == [1.0, math.inf, -math.inf, 0.0, 0.0, 0.3]


def test_a_resend_to_victoriametrics_is_no_refusal(victoria: VictoriaMetrics, tmp_path: Any) -> None:
    records = losses(200, time.time() - 40, step=0.2)
    writer = RemoteWriter(victoria.write_url, POD)
    assert writer.push(records) == [] and writer.push(records) == []
    # Measured: VictoriaMetrics takes the resend (204) and keeps both copies of every sample (a few of
    # them show in the export up to about 0.5 s after a force_flush) ...
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == 2 * len(records), 10, "the resent copies in the export")
    [(_, samples)] = victoria.export(LOSS)
    assert_twelve_digits(samples, sorted(expected(records) * 2))
    # ... unless it runs with -dedup.minScrapeInterval=1ms, the flag docs recommend for at-least-once delivery.
    with VictoriaMetrics(str(tmp_path), dedup="1ms") as deduplicating:
        writer = RemoteWriter(deduplicating.write_url, POD)
        assert writer.push(records) == [] and writer.push(records) == []
        deduplicating.force_flush()
        wait_for(
            lambda: deduplicating.own_metric('vm_deduplicated_samples_total{type="merge"}') == len(records),
            10,
            "VictoriaMetrics to drop the resent copies",
        )
        [(_, samples)] = deduplicating.export(LOSS)
        assert_twelve_digits(samples, expected(records))


def test_a_wrong_path_refuses_the_sender_not_the_samples(victoria: VictoriaMetrics) -> None:
    # Measured: VictoriaMetrics answers a wrong path with 400 "unsupported path requested", not 404.
    writer = RemoteWriter(victoria.write_url.replace("/api/v1/write", "/api/v1/writ"), POD)
    with pytest.raises(ReceiverError) as caught:
        writer.push(losses(64, time.time() - 10))
    assert caught.value.status == 400 and "unsupported path" in caught.value.body and caught.value.outage
    assert len(caught.value.args[0]) < 600
