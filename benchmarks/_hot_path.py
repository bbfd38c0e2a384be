"""The hot-path rows of benchmarks/run.py: CPU per report, each mode in a child process of its own, beside
the floor (a raw write), runai 0.4.1 and, with ``--baseline REV``, the library at another git revision."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tarfile
import uuid

from harness import REPO, Pushgateway, job_env

# Each hot-path child measures its own CPU (all threads, user + system) from
# the first report to the end of finish(). The design floor is measured in the
# same process as what it is compared with (blocks alternating, or before and
# after), so that the machine's drift hits both alike.
_CHILD = r"""
import json, os, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
cpu = time.process_time  # this process, all threads, user + system

def design(n):
    # The design floor: the same line, one f-string, one os.write, no checks, no counter. Its file is
    # outside the pod directory, as the raw floor's (benchmarks/floor_steps.py measures that share).
    fd = os.open("design-floor.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    write, ns, name = os.write, time.time_ns, "loss"
    c0 = cpu()
    for i in range(n):
        v = 0.123456789 + i
        write(fd, f'{{"seq":{i},"ts_us":{ns() // 1000},"kind":"metric","name":"{name}","value":{v!r}}}\n'.encode())
    c1 = cpu()
    os.close(fd)
    return c1 - c0

def loop(reporter, n):
    c0 = cpu()
    for i in range(n):
        reporter.reportMetric("loss", 0.123456789 + i)
    return cpu() - c0

if mode == "floor":
    from runai.reporter.spool import encode_metric
    line = b"x" * (len(encode_metric(n, time.time_ns() // 1000, "loss", 0.123456789)) - 1) + b"\n"
    fd = os.open(os.path.join(os.environ["reporterSpoolDir"], "floor.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    c0 = cpu()
    for i in range(n):
        os.write(fd, line)
    c1 = cpu()
    ok = True
elif mode in ("metric", "parameter", "forked", "loop"):
    import runai.reporter
    reporter = runai.reporter.Reporter()
    # As in a training job, the Reporter exists before the reports flow: wait
    # until its uploader runs and has delivered a first report.
    reporter.reportMetric("warmup", 0)
    while not any(n.endswith(".ckpt") for n in os.listdir(reporter.settings.pod_dir)):
        time.sleep(0.01)
    if mode == "loop":  # reportMetric alone (finish() not counted), in blocks alternating with the design floor's
        blocks, floor_s, loop_s = 20, 0.0, 0.0
        for _ in range(blocks):
            floor_s += design(n // blocks)
            loop_s += loop(reporter, n // blocks)
        print(json.dumps({"us": loop_s / n * 1e6, "design_us": floor_s / n * 1e6, "ok": reporter.finish()}))
        sys.exit(0)
    floor_s = design(n) if mode == "metric" else 0.0  # and again after the job: the mean brackets it
    if mode == "forked":
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            sys.exit(0)
    report = reporter.reportParameter if mode == "parameter" else reporter.reportMetric
    c0 = cpu()
    for i in range(n):
        report("loss", 0.123456789 + i)
    ok = reporter.finish()
    c1 = cpu()
    if mode == "metric":
        floor_s = (floor_s + design(n)) / 2
        print(json.dumps({"us": (c1 - c0) / n * 1e6, "design_us": floor_s / n * 1e6, "ok": ok}))
        sys.exit(0)
elif mode == "runai-041":
    # The real runai 0.4.1 (first on sys.path through PYTHONPATH): a forked
    # worker process that POSTs every report; its finish() waits for them all.
    import runai.reporter
    assert runai.reporter.__file__.startswith(os.environ["RUNAI_041_DIR"]), runai.reporter.__file__
    c0 = cpu()
    for i in range(n):
        runai.reporter.reportMetric("loss", 0.123456789 + i)
    runai.reporter.finish()
    c1 = cpu()
    ok = True
elif mode == "pushadd":
    # What runai 0.4.1 does per report: build a registry and POST it at once.
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
    c0 = cpu()
    for i in range(n):
        registry = CollectorRegistry()
        g = Gauge("reporter_push_gateway_metric_loss", "", ["metric_name", "push_gateway_type"], registry=registry)
        g.labels("loss", "metric").set(0.123456789 + i)
        pushadd_to_gateway(os.environ["reporterGatewayURL"], job="reporter_pod_info", registry=registry,
                           grouping_key={"podUUID": os.environ["podUUID"]})
    c1 = cpu()
    ok = True
print(json.dumps({"us": (c1 - c0) / n * 1e6, "ok": ok}))
"""


def fetch_041(work: str) -> str | None:
    """Download and unpack runai 0.4.1's sdist into *work* (never into the repository)."""
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "runai==0.4.1",
                "-d",
                work,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        with tarfile.open(os.path.join(work, "runai-0.4.1.tar.gz")) as sdist:
            sdist.extractall(work, filter="data")
    except (OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        print(f"runai 0.4.1 is unavailable ({exc}); its row is left out", file=sys.stderr)
        return None
    return os.path.join(work, "runai-0.4.1")


def unpack_revision(rev: str, work: str) -> str:
    """The repository as it was at git revision *rev*, unpacked into *work* (never into the repository)."""
    target = os.path.join(work, "baseline")
    os.makedirs(target)
    archive = subprocess.run(
        ["git", "-C", REPO, "archive", "--format=tar", rev], check=True, capture_output=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True, timeout=60)
    return target


def child(
    mode: str, n: int, gateway: str, spool: str, runai_041: str | None = None, baseline: str | None = None
) -> dict[str, float]:
    """One child's figures: "us" (CPU per report), and "design_us" (the design floor's, same process) for
    the modes that measure it beside their own."""
    env = job_env(podUUID=f"bench-{uuid.uuid4()}", reporterGatewayURL=gateway, reporterSpoolDir=spool)
    if mode == "runai-041":
        assert runai_041 is not None
        env["PYTHONPATH"], env["RUNAI_041_DIR"] = runai_041, runai_041
    if mode.endswith("@baseline"):
        # The same child code, importing (and spawning the uploader of) the baseline revision.
        assert baseline is not None
        mode = mode.split("@", 1)[0]
        env["PYTHONPATH"] = baseline
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        cwd=spool,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    if not result.pop("ok"):
        raise RuntimeError(f"{mode}: finish() did not deliver")
    return {key: float(value) for key, value in result.items()}


def hot_path(
    gw: Pushgateway, spool: str, runs: int, n: int, runai_041: str | None, baseline: tuple[str, str] | None = None
) -> list[tuple[str, str, str]]:
    modes = {"floor": n, "loop": n, "metric": n, "parameter": n, "forked": n, "pushadd": max(200, n // 50)}
    if baseline is not None:
        modes["metric@baseline"] = n
    if runai_041 is not None:
        modes["runai-041"] = max(1000, n // 50)  # its finish() waits for one POST per report
    samples: dict[str, list[float]] = {m: [] for m in modes}
    versus_design: dict[str, list[float]] = {"loop": [], "metric": []}  # each run's ratio, same process
    designs: list[float] = []
    for _ in range(runs):  # interleaved, so drift in machine load hits every mode alike
        for mode, count in modes.items():
            result = child(mode, count, gw.address, spool, runai_041, baseline[1] if baseline else None)
            samples[mode].append(result["us"])
            if mode in versus_design:
                designs.append(result["design_us"])
                versus_design[mode].append(result["us"] / result["design_us"])
    floor = statistics.median(samples["floor"])
    labels = {
        "floor": "raw os.write of a same-size line (floor)",
        "loop": "reportMetric in a loop (finish() not counted)",
        "metric": "reportMetric, first report to finish()",
        "parameter": "reportParameter, first report to finish()",
        "forked": "reportMetric in a forked child",
        "pushadd": "pushadd_to_gateway per report (0.4.1's way)",
        "runai-041": "runai 0.4.1 itself, reportMetric to finish()",
        "metric@baseline": f"reportMetric at {baseline[0] if baseline else ''}, first report to finish()",
    }
    design = statistics.median(designs)
    rows = [
        (f"CPU/report: {labels['floor']}", f"{floor:.2f} us (1.0x floor)", ""),
        (
            "CPU/report: design floor: the line by one f-string + os.write",
            f"{design:.2f} us ({design / floor:.1f}x floor; measured in the loop's and the job's processes)",
            "",
        ),
    ]
    targets = {
        "loop": "<= 1.15x design",
        "metric": "<= 1.4x design",
        "parameter": "<= 3x floor",
        "forked": "<= 3x floor",
    }
    for mode, values in samples.items():
        if mode == "floor":
            continue
        med = statistics.median(values)
        versus = ""
        if mode in versus_design:  # the median of each run's ratio to the floor measured in its own process
            versus = f", {statistics.median(versus_design[mode]):.2f}x design"
        rows.append(
            (f"CPU/report: {labels[mode]}", f"{med:.2f} us ({med / floor:.1f}x floor{versus})", targets.get(mode, ""))
        )
    if baseline is not None:
        ratio = statistics.median(samples["metric"]) / statistics.median(samples["metric@baseline"])
        rows.append((f"  reportMetric now / at {baseline[0]} (ratio of medians)", f"{ratio:.3f}", "<= 1.10"))
    return rows
