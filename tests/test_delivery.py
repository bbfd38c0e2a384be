"""End to end against a real Pushgateway: report, crash, recover."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import runai.reporter
from runai.reporter import Reporter
from harness import Pushgateway, job_env, kill_uploaders, metric_name, parameter_name, uploader_pids, wait_for
from tests._helpers import start_job, uploader_cli, wait_for_give_up

SEED_SCOPED = """
import runai.reporter

with runai.reporter.Reporter() as reporter:
    reporter.reportMetric('batch_size', 100)
    reporter.reportParameter('loss_method', 'categorical_crossentropy')
"""

SEED_NON_SCOPED = """
import runai.reporter

runai.reporter.reportMetric('batch_size', 100)
runai.reporter.reportParameter('loss_method', 'categorical_crossentropy')
runai.reporter.finish()
"""


def run_job(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=job_env(**env), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def recover(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return uploader_cli(env, "recover", *args, timeout=timeout)


def assert_seed_values(gateway: Pushgateway, pod: str) -> None:
    series = gateway.series(pod)
    labels, value = series[metric_name("batch_size")]
    assert value == 100
    assert labels == {"job": "reporter_pod_info", "podUUID": pod, "instance": "",
                      "metric_name": "batch_size", "push_gateway_type": "metric"}
    labels, value = series[parameter_name("loss_method")]
    assert value == 1
    assert labels == {"job": "reporter_pod_info", "podUUID": pod, "instance": "", "param_name": "loss_method",
                      "param_value": "categorical_crossentropy", "push_gateway_type": "parameter"}


def test_help_and_type_are_those_of_041(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("typed", 1)
        reporter.reportParameter("typed_param", "x")
    (group,) = [g for g in gateway.groups() if g["labels"].get("podUUID") == pod]
    for name in (metric_name("typed"), parameter_name("typed_param")):
        assert group[name]["type"] == "GAUGE"
        assert group[name].get("help", "") == ""  # 0.4.1 pushed documentation=""


@pytest.mark.parametrize("code", [SEED_SCOPED, SEED_NON_SCOPED], ids=["scoped", "non-scoped"])
def test_seed_examples_deliver_in_the_041_wire_format(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                      code: str) -> None:
    done = run_job(code, env)
    assert done.returncode == 0, done.stderr
    # No surprise output: the start line only, one (the non-scoped API makes one Reporter), as issue 21 asks.
    assert done.stdout == "" and done.stderr == (f"runai.reporter: pod {pod}, spool {env['reporterSpoolDir']}/{pod}: "
                                                 f"reporting to the gateway http://{gateway.address} "
                                                 "(reporterQuiet=1 hides this)\n")
    assert_seed_values(gateway, pod)  # already there when the job returned


def test_in_process_scoped_use_is_delivered_on_exit(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        for step in range(1000):
            reporter.reportMetric("step", step)
        reporter.reportParameter("optimizer", "adam")
    assert reporter.finish() is True
    assert gateway.value(pod, metric_name("step")) == 999
    assert gateway.series(pod)[parameter_name("optimizer")][0]["param_value"] == "adam"


def test_exit_without_finish_still_delivers(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    done = run_job("""
        import runai.reporter
        for i in range(5000):
            runai.reporter.reportMetric('loss', i / 10)
        runai.reporter.reportParameter('note', 'no finish() call')
    """, env)
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("loss")) == 499.9
    assert gateway.series(pod)[parameter_name("note")][0]["param_value"] == "no finish() call"


def test_sigkill_mid_stream_uploader_delivers_last_value(env: dict[str, str], gateway: Pushgateway,
                                                          pod: str) -> None:
    job = start_job("""
import signal, runai.reporter
for i in range(20000):
    runai.reporter.reportMetric('step', i)
print('reported', flush=True)
signal.pause()
""", job_env(**env))
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "reported"
        job.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        job.wait(10)
        wait_for(lambda: gateway.value(pod, metric_name("step")) == 19999, 10, "the last value on the gateway")
        assert time.monotonic() - killed_at < 10
    finally:
        job.kill()
        job.communicate()


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid needs root")
def test_pod_death_with_gateway_down_then_recover(env: dict[str, str], own_gateway: Pushgateway,
                                                  spool_dir: str, pod: str) -> None:
    env = {**env, "reporterGatewayURL": own_gateway.address}  # not started: the gateway is down
    code = """
import signal, runai.reporter
for i in range(3000):
    runai.reporter.reportMetric('loss', i)
    runai.reporter.reportMetric('accuracy', i / 3000)
runai.reporter.reportParameter('optimizer', 'sgd')
runai.reporter.reportParameter('optimizer', 'adam')
print('reported', flush=True)
signal.pause()
"""
    # A container dying: every process of its pid namespace, uploader included, is killed.
    job = start_job(code, job_env(**env), wrapper=("unshare", "--pid", "--fork", "--kill-child", "--mount-proc"))
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "reported"
        wait_for(lambda: uploader_pids(spool_dir), 10, "the uploader to start inside the pod")
        job.send_signal(signal.SIGKILL)
        job.wait(10)
        wait_for(lambda: not uploader_pids(spool_dir), 10, "the whole pod to die")
    finally:
        job.kill()
        job.communicate()

    own_gateway.start()
    first = recover(env)
    assert first.returncode == 0, first.stderr
    assert "delivered 6002 reports" in first.stdout
    series = own_gateway.series(pod)
    assert series[metric_name("loss")][1] == 2999
    assert series[metric_name("accuracy")][1] == pytest.approx(2999 / 3000)
    assert series[parameter_name("optimizer")][0]["param_value"] == "adam"

    own_gateway.delete_group(pod)
    second = recover(env)
    assert second.returncode == 0, second.stderr
    assert "nothing to send" in second.stdout
    assert own_gateway.series(pod) == {}  # it sent nothing


def test_gateway_down_then_up(env: dict[str, str], own_gateway: Pushgateway, pod: str) -> None:
    with Reporter(gateway_url=own_gateway.address) as reporter:
        for i in range(100):
            reporter.reportMetric("loss", i)
        uploader_log = os.path.join(reporter.settings.pod_dir, "uploader.log")
        wait_for(lambda: os.path.exists(uploader_log) and "unreachable" in open(uploader_log).read(), 10,
                 "the uploader to meet the dead gateway")
        own_gateway.start()
        assert reporter.finish(timeout=30) is True
    assert own_gateway.value(pod, metric_name("loss")) == 99


def test_finish_timeout_with_gateway_down(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=2)
    for i in range(500):
        reporter.reportMetric("loss", i)
    started = time.monotonic()
    assert reporter.finish(timeout=3) is False
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "500 of 500 reports not yet delivered" in warnings[0]
    assert f"runai-uploader recover --spool-dir={spool_dir}" in warnings[0]
    # The uploader gives up by itself (retry_timeout=2) and leaves the spool whole.
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    with open(reporter._writer.path, "rb") as f:
        assert len(f.read().splitlines()) == 502  # header, 500 reports, end marker
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert "giving up" in log and "runai-uploader recover" in log


def test_job_output_is_not_held_by_the_uploader(env: dict[str, str], own_gateway: Pushgateway,
                                                spool_dir: str) -> None:
    # The gateway is down, so the uploader outlives the job; a caller capturing
    # the job's output must still see EOF when the job exits.
    started = time.monotonic()
    done = run_job("""
        import runai.reporter
        runai.reporter.reportMetric('a', 1)
        print('finished', runai.reporter.finish(timeout=0.5))
    """, {**env, "reporterGatewayURL": own_gateway.address, "reporterRetryTimeout": "1"}, timeout=20)
    assert time.monotonic() - started < 15
    assert done.stdout == "finished False\n"
    assert uploader_pids(spool_dir) or True  # it may or may not have given up yet; the fixture waits for it


def write_raw(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_partial_line_is_delivered_once_complete(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
        path = reporter._writer.path
        write_raw(path, b'{"seq":1000,"ts_us":10000000000000000,"kind":"metric","name":"b",')
        wait_for(lambda: gateway.value(pod, metric_name("a")) == 1, 10, "a on the gateway")
        assert gateway.value(pod, metric_name("b")) is None
        write_raw(path, b'"value":2}\n')
        wait_for(lambda: gateway.value(pod, metric_name("b")) == 2, 10, "b once its line is complete")


def test_garbage_lines_are_skipped_and_never_pushed(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("before", 1)
        path = reporter._writer.path
        write_raw(path, b"this is not json\n")
        write_raw(path, b'{"seq":7,"ts_us":1,"kind":"metric","name":"nofields"}\n')
        write_raw(path, b'{"seq":8,"ts_us":1,"kind":"metric","name":"bad","value":"12"}\n')
        write_raw(path, b"\0\0\0\0\n")
        reporter.reportMetric("after", 2)
    assert reporter.finish() is True
    series = gateway.series(pod)
    assert series[metric_name("before")][1] == 1 and series[metric_name("after")][1] == 2
    assert set(series) == {metric_name("before"), metric_name("after")}
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert log.count("which is not a valid record") == 4


@pytest.mark.parametrize("damage", [b"", b"\0" * 64, b"{not json", b'{"spool_id":"SAME","offset":4',
                                    b'{"spool_id":"x","offset":5,"records":1,"last_seq":1}',
                                    b'{"spool_id":"SAME","offset":99999999,"records":1,"last_seq":1}',
                                    b'{"spool_id":"SAME","offset":7,"records":1,"last_seq":1}',
                                    b"only-temp"],
                         ids=["empty", "nul", "garbage", "truncated", "other-file", "past-end", "mid-line",
                              "only-temp"])
def test_corrupt_checkpoint_means_replay(env: dict[str, str], gateway: Pushgateway, pod: str,
                                         damage: bytes) -> None:
    with Reporter() as reporter:
        for i in range(10):
            reporter.reportMetric("loss", i)
        reporter.reportParameter("opt", "adam")
    assert reporter.finish() is True
    gateway.delete_group(pod)
    ckpt = reporter._writer.path[: -len(".jsonl")] + ".ckpt"
    if damage == b"only-temp":  # a crash between writing the temp file and the rename
        os.rename(ckpt, os.path.join(os.path.dirname(ckpt), "." + os.path.basename(ckpt) + ".tmp"))
    else:
        with open(ckpt, "wb") as f:
            f.write(damage.replace(b"SAME", reporter._writer.spool_id.encode()))
    done = recover(env)
    assert done.returncode == 0, done.stderr
    assert "delivered 11 reports" in done.stdout
    assert gateway.value(pod, metric_name("loss")) == 9
    assert gateway.series(pod)[parameter_name("opt")][0]["param_value"] == "adam"


def test_a_checkpoint_of_a_replaced_spool_file_is_not_applied(env: dict[str, str], gateway: Pushgateway,
                                                              pod: str) -> None:
    from runai.reporter.spool import encode_header

    with Reporter() as reporter:
        reporter.reportMetric("loss", 1)
    path = reporter._writer.path
    old_size = os.path.getsize(path)
    # Another file now stands at that path, larger than the old checkpoint's offset.
    lines = [encode_header("f" * 32, pod, 1)] + [
        f'{{"seq":{i},"ts_us":{i},"kind":"metric","name":"replaced","value":{i}}}\n'.encode() for i in range(1, 40)]
    with open(path, "wb") as f:
        f.write(b"".join(lines))
    assert os.path.getsize(path) > old_size
    done = recover(env)
    assert done.returncode == 0, done.stderr
    assert "delivered 39 reports" in done.stdout  # replayed from the start, nothing skipped
    assert gateway.value(pod, metric_name("replaced")) == 39


def test_a_nul_filled_tail_is_never_pushed(env: dict[str, str], own_gateway: Pushgateway, pod: str,
                                           spool_dir: str) -> None:
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=0.5)
    for i in range(5):
        reporter.reportMetric("kept", i)
    reporter._writer._close_fd()  # the process "dies": no end marker
    write_raw(reporter._writer.path, b"\0" * 300)  # what a power cut leaves after the last page
    reporter._writer.closed, reporter._result = True, False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    own_gateway.start()
    done = recover({**env, "reporterGatewayURL": own_gateway.address})
    assert done.returncode == 0, done.stderr
    assert "delivered 5 reports" in done.stdout
    assert set(own_gateway.series(pod)) == {metric_name("kept")}
    assert own_gateway.value(pod, metric_name("kept")) == 4


def test_two_processes_report_for_one_pod(env: dict[str, str], gateway: Pushgateway, pod: str,
                                          spool_dir: str) -> None:
    code = """
import sys, runai.reporter
with runai.reporter.Reporter() as r:
    print('ready', flush=True)
    sys.stdin.readline()
    for i in range(2000):
        r.reportMetric('rank_{rank}', i)
        r.reportMetric('shared', i)
    print(r.finish(), flush=True)
"""
    jobs = [subprocess.Popen([sys.executable, "-c", code.format(rank=rank)], env=job_env(**env), text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for rank in range(2)]
    try:
        for job in jobs:
            assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        for job in jobs:
            job.communicate("go\n", timeout=60)
    finally:
        for job in jobs:
            job.kill()
    outputs = [job.returncode for job in jobs]
    assert outputs == [0, 0]
    series = gateway.series(pod)
    assert series[metric_name("rank_0")][1] == 1999
    assert series[metric_name("rank_1")][1] == 1999
    assert series[metric_name("shared")][1] == 1999
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert log.count("uploader started") == 1  # both writers used the one uploader


def test_a_rejected_metric_does_not_block_the_others(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    clash = metric_name(f"clash_{pod.replace('-', '_')}")
    # The same name already exists as a counter in another group: the gateway answers 400.
    assert gateway.push_text(f"job/other/instance/{pod}", f"# TYPE {clash} counter\n{clash} 1\n") == 200
    with Reporter() as reporter:
        reporter.reportMetric(clash[len("reporter_push_gateway_metric_"):], 5)
        for i in range(50):
            reporter.reportMetric("fine", i)
        reporter.reportParameter("opt", "adam")
        started = time.monotonic()
    assert reporter.finish() is False  # honest: one value was refused
    assert time.monotonic() - started < 10
    series = gateway.series(pod)
    assert series[metric_name("fine")][1] == 49
    assert parameter_name("opt") in series
    assert clash not in series
    assert any("refused 1" in r.getMessage() for r in caplog.records)
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert f"the gateway rejected metric '{clash[len('reporter_push_gateway_metric_'):]}'" in log


def test_non_scoped_report_after_finish_starts_a_new_reporter(env: dict[str, str], gateway: Pushgateway,
                                                              pod: str) -> None:
    runai.reporter.reportMetric("a", 1)
    first = runai.reporter._global
    assert runai.reporter.finish() is True
    assert runai.reporter.finish() is True  # nothing left: still True
    runai.reporter.reportMetric("a", 2)
    assert runai.reporter._global is not first
    assert runai.reporter.finish() is True
    assert gateway.value(pod, metric_name("a")) == 2


def test_recover_waits_for_a_running_uploader(env: dict[str, str], gateway: Pushgateway, spool_dir: str,
                                              pod: str) -> None:
    from runai.reporter.spool import PodLock

    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
    with PodLock(os.path.join(spool_dir, pod)) as lock:
        wait_for(lock.acquire, 10, "the reporter's uploader to exit")  # then this test plays the uploader
        done = recover(env, "--timeout", "0.5")
    assert done.returncode == 1
    assert f"an uploader (pid {os.getpid()}) is delivering it" in done.stderr
    assert "Traceback" not in done.stderr


def test_recover_all_pods(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str) -> None:
    for name in ("pod-a", "pod-b"):
        reporter = Reporter(pod_uuid=name, gateway_url=own_gateway.address, retry_timeout=0.5)
        reporter.reportMetric("x", 1 if name == "pod-a" else 2)
        assert reporter.finish(timeout=0.2) is False
    for name in ("pod-a", "pod-b"):
        wait_for_give_up(os.path.join(spool_dir, name), spool_dir)
    own_gateway.start()
    done = recover({**env, "reporterGatewayURL": own_gateway.address}, "--all")
    assert done.returncode == 0, done.stderr
    assert own_gateway.value("pod-a", metric_name("x")) == 1
    assert own_gateway.value("pod-b", metric_name("x")) == 2
    again = recover({**env, "reporterGatewayURL": own_gateway.address}, "--all")
    assert again.returncode == 0 and again.stdout.count("nothing to send") == 2


def test_recover_errors_are_one_line(env: dict[str, str]) -> None:
    done = recover({**env, "reporterGatewayURL": ""})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "reporterGatewayURL" in done.stderr
    assert "Traceback" not in done.stderr


def test_recover_gives_up_with_a_reason(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str) -> None:
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=0.5)
    reporter.reportMetric("x", 1)
    assert reporter.finish(timeout=0.2) is False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    done = recover({**env, "reporterGatewayURL": own_gateway.address}, "--timeout", "1")
    assert done.returncode == 1
    assert "unreachable" in done.stderr and "1 reports still pending" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_lists_the_subcommands() -> None:
    done = subprocess.run([sys.executable, "-m", "uploader", "--help"], env=job_env(), capture_output=True,
                          text=True, check=True)
    assert "run" in done.stdout and "recover" in done.stdout


def test_leftover_uploaders_helper_finds_real_processes(env: dict[str, str], own_gateway: Pushgateway,
                                                        spool_dir: str) -> None:
    # The autouse guard relies on uploader_pids(); prove it sees a live uploader.
    reporter = Reporter(gateway_url=own_gateway.address)
    reporter.reportMetric("x", 1)
    wait_for(lambda: uploader_pids(spool_dir), 10, "the uploader to be visible")
    assert reporter.finish(timeout=0.1) is False
    assert kill_uploaders(spool_dir)
    wait_for(lambda: not uploader_pids(spool_dir), 10, "the killed uploader to disappear")


def test_uploader_exits_when_its_pod_directory_is_removed(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                          spool_dir: str) -> None:
    import shutil

    reporter = Reporter()
    reporter.reportMetric("x", 1)
    wait_for(lambda: gateway.value(pod, metric_name("x")) == 1, 10, "x on the gateway")
    pids = uploader_pids(spool_dir)
    assert len(pids) == 1
    shutil.rmtree(reporter.settings.pod_dir)
    reporter.reportMetric("x", 2)  # into a deleted file: no error for the training loop
    wait_for(lambda: not uploader_pids(spool_dir), 10, "the uploader to exit rather than spin")
    assert reporter.finish(timeout=1) is False
    assert not uploader_pids(spool_dir)  # and finish() did not start another into the void
