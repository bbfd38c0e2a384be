"""One training process of benchmarks/peers.py, run by whichever Python it is given (a fresh interpreter each).

    python _peer_child.py time LOGGER N WORK    CPU per report from the first call to the end of the logger's
                                               own finish, and the seconds that finish took (one JSON line)
    python _peer_child.py kill LOGGER N WORK    N calls, then SIGKILL of this very process
    python _peer_child.py count LOGGER N WORK   how many of the reports are on disk in WORK now

Standard library only beside the logger itself: the interpreter may be a venv holding nothing else.
"""

from __future__ import annotations

import glob
import json
import os
import resource
import signal
import struct
import sys
import time
from typing import Callable

NAME = "loss"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def _children() -> list[int]:
    """This process's child processes (a logger's helper: W&B's service), whose exit a kill run waits for."""
    pids = []
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as f:
            pids += [int(p) for p in f.read().split()]
    return pids


# Each logger: setup(work) -> (the loop over n reports, finish). The loops are written out per logger, so
# that no wrapper's call is counted against any of them.


def _os_write(work: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    fd = os.open(os.path.join(work, "floor.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    line = b'{"seq":1,"ts_us":1795748321159200,"kind":"metric","name":"loss","value":1000.123456789}\n'

    def loop(n: int, write: Callable[[int, bytes], int] = os.write) -> None:
        for _ in range(n):
            write(fd, line)

    return loop, lambda: None


def _runai(work: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import runai.reporter

    reporter = runai.reporter.Reporter()  # podUUID, gateway and spool directory from the environment
    # As in a training job, the Reporter exists before the reports flow: its uploader runs and has
    # delivered a first report (W&B's init waits for its service likewise).
    reporter.reportParameter("started", "yes")
    deadline = time.monotonic() + 30
    while not glob.glob(os.path.join(reporter.settings.pod_dir, "*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.01)

    def loop(n: int) -> None:
        report = reporter.reportMetric
        for i in range(n):
            report(NAME, 0.123456789 + i)

    def finish() -> None:
        if not reporter.finish():
            raise SystemExit("runai: finish() did not deliver every report")

    return loop, finish


def _wandb(work: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import wandb

    run = wandb.init(project="peers")  # WANDB_MODE=offline, WANDB_DIR in *work*: set by peers.py

    def loop(n: int) -> None:
        log = run.log
        for i in range(n):
            log({NAME: 0.123456789 + i})

    return loop, run.finish


def _mlflow(work: str, synchronous: bool = True) -> tuple[Callable[[int], None], Callable[[], None]]:
    import mlflow

    mlflow.start_run()  # MLFLOW_TRACKING_URI: a file store in *work*, set by peers.py

    def loop(n: int) -> None:
        log = mlflow.log_metric
        for i in range(n):
            log(NAME, 0.123456789 + i, step=i, synchronous=synchronous)

    return loop, mlflow.end_run


LOGGERS: dict[str, Callable[[str], tuple[Callable[[int], None], Callable[[], None]]]] = {
    "os.write": _os_write,
    "runai": _runai,
    "wandb": _wandb,
    "mlflow": _mlflow,
    "mlflow-async": lambda work: _mlflow(work, synchronous=False),
}


def _wandb_records(buf: bytes) -> list[bytes]:
    """The records of a .wandb file: a 7-byte header, then LevelDB's log format (32 KiB blocks, each record
    in chunks with a 7-byte header: crc32c, length, type). A torn last record is left out."""
    block, off, pending, out = 32768, 7, b"", []
    while off + 7 <= len(buf):
        left = block - off % block
        if left < 7:  # a block's tail too short for a header is padding
            off += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", buf, off)
        if kind == 0:  # zeros: padding to the block's end
            off += left
            continue
        data = buf[off + 7 : off + 7 + length]
        if len(data) < length:
            break
        off += 7 + length
        if kind == 1:  # FULL
            out.append(data)
        elif kind == 2:  # FIRST
            pending = data
        elif kind == 3:  # MIDDLE
            pending += data
        elif kind == 4:  # LAST
            out.append(pending + data)
    return out


def count(logger: str, work: str) -> int:
    """Reports of *logger* on disk in *work*."""
    if logger == "os.write":
        with open(os.path.join(work, "floor.jsonl"), "rb") as f:
            return f.read().count(b"\n")
    if logger == "runai":
        total = 0
        for path in glob.glob(os.path.join(work, "spool", "*", "*.jsonl")):
            with open(path, "rb") as f:
                total += f.read().count(b'"kind":"metric","name":"loss"')
        return total
    if logger == "wandb":
        from wandb.proto import wandb_internal_pb2 as pb

        total = 0
        # Each run directory once: W&B also links the latest run as latest-run/.
        for path in {os.path.realpath(p) for p in glob.glob(os.path.join(work, "**", "*.wandb"), recursive=True)}:
            with open(path, "rb") as f:
                for data in _wandb_records(f.read()):
                    record = pb.Record()
                    record.ParseFromString(data)
                    if record.WhichOneof("record_type") == "history":
                        items = record.history.item
                        total += any(item.key == NAME or list(item.nested_key) == [NAME] for item in items)
        return total
    total = 0  # MLflow's file store: one line per value in <experiment>/<run>/metrics/<name>
    for path in glob.glob(os.path.join(work, "mlruns", "*", "*", "metrics", NAME)):
        with open(path, "rb") as f:
            total += f.read().count(b"\n")
    return total


def main(argv: list[str]) -> int:
    what, logger, n, work = argv[0], argv[1], int(argv[2]), argv[3]
    if what == "count":
        print(json.dumps({"count": count(logger, work)}))
        return 0
    loop, finish = LOGGERS[logger](work)
    if what == "kill":
        print(json.dumps({"children": _children()}), flush=True)
        loop(n)
        os.kill(os.getpid(), signal.SIGKILL)  # right after the n-th call returned: nothing else runs
    c0 = _cpu()
    loop(n)
    t0 = time.perf_counter()
    finish()
    flush = time.perf_counter() - t0
    c1 = _cpu()
    print(json.dumps({"us": (c1 - c0) / n * 1e6, "flush_s": flush}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
