"""The uploader loop: follow a pod's spool files and deliver them.

One loop, woken by ``watchdog`` file events and by a poll timer (so that
correctness never depends on events arriving):

1. read the complete new lines of every spool file;
2. keep only the latest value of each metric and parameter;
3. push them (at most once per push interval; at once after a quiet spell);
4. after the gateway's 2xx, write each file's checkpoint: the commit point.

In ``follow`` mode (``runai-uploader run``) it exits once every writer is
gone and everything is delivered; in recovery mode it exits once everything
that is on disk now is delivered.
"""
from __future__ import annotations

import logging
import math
import os
import random
import select
import threading
import time
from collections import Counter
from typing import Callable

from runai.reporter.safefs import UnsafePathError
from runai.reporter.spool import (
    SEARCH_BYTES,
    BadSpoolError,
    Checkpoint,
    PodLock,
    SpoolTail,
    checkpoint_path,
    is_spool_file,
    open_spool,
    store_checkpoint,
)
from runai.reporter.spool import Report as Record

from .push import GatewayError, Pusher, exposition_name
from .watch import SpoolWatch

__all__ = ["Uploader", "EXIT_DELIVERED", "EXIT_PENDING", "MAX_PENDING_VALUES", "TORN_LINE"]

logger = logging.getLogger(__name__)

EXIT_DELIVERED = 0
EXIT_PENDING = 1  # gave up with reports still pending; they stay on disk

TORN_LINE = "an incomplete last line (the writer died mid-record)"
SCAN_BYTES = 64 << 20  # read per scan by default; bounds how long pushes wait behind reading
# Distinct values read and not yet pushed. Past it reading pauses until they
# are delivered; the rest waits on disk. About 300 bytes each in memory.
MAX_PENDING_VALUES = 100_000
_READ_BYTES = 4 << 20  # one read of a spool file
_MIN_LINE_BYTES = 32  # no valid record line is shorter: a read of N such bytes adds at most N/32 values


class _Wakeup:
    """A self-pipe the loop sleeps on.

    ``set()`` may be called from any thread and from a signal handler, even
    while the main thread is inside :meth:`wait` or :meth:`clear`
    (``threading.Event`` takes a lock there, and a handler that sets it can
    deadlock the thread it interrupted). It never waits for its lock: whoever
    finds it taken skips, since the holder is either another ``set()`` (a
    wakeup is on its way) or :meth:`close` (the loop is over). The lock keeps
    ``close()`` from releasing the pipe's descriptor under a ``set()`` about to
    write to it: the number could be reused by any file opened next.
    """

    def __init__(self) -> None:
        self._read = self._write = -1
        self._poll = select.poll()  # not select(): it fails on descriptors past 1023
        self._lock = threading.Lock()

    def open(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._read, select.POLLIN)

    def close(self) -> None:
        with self._lock:
            write, self._write = self._write, -1
            read, self._read = self._read, -1
        if read >= 0:
            self._poll.unregister(read)
        for fd in (write, read):
            if fd >= 0:
                os.close(fd)

    def set(self) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._write >= 0:  # else not running: the loop checks its stop flag first thing
                os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wakeup is pending anyway
        finally:
            self._lock.release()

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        self._poll.poll(math.ceil(timeout * 1000))


class Uploader:
    """Delivers one pod directory's spool files to the gateway.

    ``stop()`` may be called from any thread (or a signal handler), and twice.
    """

    def __init__(
        self,
        pod_dir: str,
        pusher: Pusher,
        *,
        push_interval: float = 1.0,
        retry_timeout: float = 600.0,
        follow: bool = True,
        poll_interval: float = 0.5,
        backoff: tuple[float, float] = (0.1, 5.0),
        lock: PodLock | None = None,
        use_watchdog: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
        history_bytes: int | None = None,
        fsync_interval: float | None = None,
        scan_bytes: int = SCAN_BYTES,
        max_pending: int = MAX_PENDING_VALUES,
    ) -> None:
        self.pod_dir = pod_dir
        self.pusher = pusher
        self.push_interval = push_interval
        self.retry_timeout = retry_timeout
        self.follow = follow
        self.poll_interval = poll_interval
        self.backoff = backoff
        self.lock = lock
        self.use_watchdog = use_watchdog
        self.on_progress = on_progress  # called with (delivered_records, delivered_bytes) after each commit
        self.history_bytes = history_bytes  # bound on delivered spool kept; None keeps everything
        self.fsync_interval = fsync_interval  # fsync growing spool files this often; None never
        self.scan_bytes = scan_bytes  # read at most about this much before pushing and committing
        self.max_pending = max_pending  # distinct values held before reading pauses
        # what this run did, for summaries
        self.delivered_records = 0
        self.delivered_bytes = 0  # of spool files, header lines included
        self.ignored_files: dict[str, str] = {}  # spool files that cannot be read at all -> why
        self.rejected: dict[str, str] = {}  # exposition name (printable) -> the gateway's answer, or why not sent
        self.last_error = ""

        self._tails: dict[str, SpoolTail] = {}
        self._acked: dict[str, Checkpoint] = {}  # the last checkpoint of each followed file
        self._alive: dict[str, bool] = {}
        self._closed: set[str] = set()  # delivered files of gone writers, and unreadable ones
        self._skipped_retired: Counter[str] = Counter()  # skip reasons of files no longer followed
        self._history: dict[str, tuple[float, int]] = {}  # delivered files of gone writers: (mtime, size)
        self._synced: dict[str, int] = {}  # spool path -> size at its last fsync
        # coalesced values not yet pushed, with the file each came from
        self._latest: dict[tuple[str, str], tuple[Record, str]] = {}
        self._rejected_in: dict[str, int] = {}  # spool path -> its records the gateway refused
        self._wake = _Wakeup()
        self._stopping = False  # a plain flag: stop() runs in signal handlers
        self._watch = SpoolWatch(pod_dir, self._wake.set)

    # -- control ----------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        # Never waits for a lock (see _Wakeup): safe in a signal handler. Cuts a push in
        # flight, so that stopping never waits for a slow gateway.
        self._stopping = True
        self.pusher.abort()
        self._wake.set()

    def skip_reasons(self) -> Counter[str]:
        """Lines skipped as corrupt (never pushed) by this run, counted by reason."""
        reasons = Counter(self._skipped_retired)
        for tail in self._tails.values():
            reasons.update(tail.skip_reasons)
        return reasons

    def undelivered_bytes(self) -> int:
        """Bytes of the followed files that no checkpoint covers yet (the first scan opens every file)."""
        return sum(t.size() - self._acked[p].offset for p, t in self._tails.items())

    def pending_records(self) -> int:
        """Reports read or on disk that no checkpoint covers yet (a lower bound while reading)."""
        return sum(t.records - self._acked[p].records for p, t in self._tails.items())

    def run(self) -> int:
        """Deliver until done; return :data:`EXIT_DELIVERED` or :data:`EXIT_PENDING`."""
        self._wake.open()
        try:
            if self.use_watchdog:
                self._watch.start()
            return self._loop()
        finally:
            self._watch.stop()
            self._wake.close()
            for tail in self._tails.values():
                tail.close()
            self.pusher.close()

    # -- the loop ---------------------------------------------------------

    def _loop(self) -> int:
        failing_since: float | None = None
        failures = 0
        next_try = 0.0
        last_push = -math.inf
        next_liveness = 0.0
        next_fsync = 0.0
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            check_liveness = now >= next_liveness
            if check_liveness:
                next_liveness = now + self.poll_interval
            drained = self._scan(check_liveness)
            if self.fsync_interval is not None and now >= next_fsync:
                self._sync_spools()
                next_fsync = now + self.fsync_interval

            due = math.inf
            if self._undelivered():
                # Values wait out the push interval; end-of-stream and recovery
                # flush at once so that finish() and recover return quickly.
                due = next_try
                if self._latest and not self._flush_wanted():
                    due = max(due, last_push + self.push_interval)
                if now >= due:
                    pushed = bool(self._latest)
                    if self._deliver():
                        if failing_since is not None:
                            logger.info("the gateway is reachable again after %.1f s", now - failing_since)
                        failing_since, failures, next_try = None, 0, 0.0
                        if pushed:
                            last_push = now
                            # More reports will wait out the interval anyway:
                            # read them on a timer, not on an event per write.
                            self._watch.set_streaming(self.follow)
                        continue  # more may have arrived while pushing
                    failures += 1
                    if failing_since is None:
                        failing_since = now
                    next_try = now + self._backoff_delay(failures)
                    due = next_try
            elif drained and self._done():
                if not self._handoff():
                    continue
                return EXIT_DELIVERED
            elif self._watch.streaming:
                if now >= last_push + self.push_interval:
                    # A whole interval without reports: back to waking on
                    # every write, and rescan for any that raced the switch.
                    self._watch.set_streaming(False)
                    continue
                due = last_push + self.push_interval

            if failing_since is not None and now - failing_since >= self.retry_timeout and not self._writers_alive():
                logger.error(
                    "giving up after %.0f s without reaching the gateway (%s); %d reports stay in %s: "
                    "run `runai-uploader recover` to upload them", now - failing_since, self.last_error,
                    self.pending_records(), self.pod_dir,
                )
                return EXIT_PENDING
            if self.fsync_interval is not None and self._writers_alive():
                due = min(due, next_fsync)
            self._wake.wait(max(0.0, min(self.poll_interval, due - now)))
        return EXIT_DELIVERED if not self._undelivered() else EXIT_PENDING

    def _backoff_delay(self, failures: int) -> float:
        base, cap = self.backoff
        # Jitter keeps many pods that lost one gateway from retrying in step.
        return min(cap, base * 2.0 ** min(failures - 1, 30)) * random.uniform(0.5, 1.0)

    # -- reading ----------------------------------------------------------

    def _scan(self, check_liveness: bool) -> bool:
        """Read what is new; False if the read budget ran out before the end."""
        try:
            names = sorted(os.listdir(self.pod_dir))
        except FileNotFoundError:
            # Nothing left to deliver from, nor to wait for.
            logger.error("the pod directory %s was removed; exiting", self.pod_dir)
            self.stop()
            return False
        except OSError as exc:
            logger.error("cannot list %s: %s", self.pod_dir, exc)
            return False
        budget = self.scan_bytes
        full = False
        for name in names:
            path = os.path.join(self.pod_dir, name)
            if not is_spool_file(name) or path in self._closed:
                continue
            tail = self._tails.get(path) or self._open(path)
            if tail is None:
                continue
            if check_liveness or path not in self._alive:
                self._alive[path] = tail.writer_alive()
            drained = False
            while budget > 0:
                room = self.max_pending - len(self._latest)
                if room <= 0:
                    # Held values only grow with distinct names; the rest waits on
                    # disk until these are delivered (the loop rescans after a push).
                    full = True
                    break
                before = tail.offset
                for record in tail.read(min(_READ_BYTES, room * _MIN_LINE_BYTES)):
                    self._coalesce(record, path)
                if self._stopping:  # a scan of a big backlog takes seconds: a signal must not wait for it
                    return False
                if tail.offset == before and not tail.searching:
                    drained = True
                    break
                # A search for the end of an overlong line reads without moving the offset.
                budget -= tail.offset - before if not tail.searching else SEARCH_BYTES
            if full:
                return False
            if not drained:
                self._wake.set()  # come straight back for the rest
            elif not self._alive[path] and tail.offset == self._acked[path].offset:
                self._retire(path, tail)
        return budget > 0

    def _open(self, path: str) -> SpoolTail | None:
        try:
            opened = open_spool(path)
        except (IsADirectoryError, UnsafePathError, BadSpoolError) as exc:
            # Not a spool file, and will not become one: say so once, not on every scan.
            logger.error("ignoring %s: %s", path, exc)
            self._closed.add(path)
            self.ignored_files[path] = str(exc)
            return None
        except OSError as exc:
            logger.warning("cannot open %s: %s", path, exc)
            return None
        if opened is None:
            return None  # still being created; the next scan tries again
        tail = opened.tail
        self._tails[path] = tail
        self._acked[path] = opened.checkpoint or Checkpoint(tail.spool_id, 0, 0, 0)
        return tail

    def _retire(self, path: str, tail: SpoolTail) -> None:
        """Stop following a delivered file whose writer is gone."""
        torn = tail.unread_bytes()
        if torn:
            logger.warning("%s: ignoring %d bytes after the last complete line; the writer died mid-record",
                           path, torn)
            self._skipped_retired[TORN_LINE] += 1
        self._skipped_retired.update(tail.skip_reasons)
        tail.close()
        del self._tails[path], self._acked[path], self._alive[path]
        self._synced.pop(path, None)
        self._closed.add(path)
        try:
            info = os.stat(path)
        except OSError:
            return
        self._history[path] = (info.st_mtime, info.st_size)
        self._trim_history()

    def _trim_history(self) -> None:
        """Delete the oldest delivered files of gone writers while the history is over its bound."""
        if self.history_bytes is None:
            return
        total = sum(size for _, size in self._history.values())
        for path in sorted(self._history, key=lambda p: self._history[p][0]):
            if total <= self.history_bytes:
                break
            total -= self._history.pop(path)[1]
            for victim in (path, checkpoint_path(path)):
                try:
                    os.unlink(victim)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.error("cannot delete %s to keep the history under %d bytes: %s",
                                 victim, self.history_bytes, exc)
            logger.info("deleted delivered spool %s: history over %d bytes", path, self.history_bytes)

    def _sync_spools(self) -> None:
        """fsync every spool file that grew since its last fsync (the `interval` durability policy)."""
        for path, tail in self._tails.items():
            size = tail.size()
            if size > self._synced.get(path, 0):
                try:
                    tail.fsync()
                except OSError as exc:
                    logger.error("cannot fsync %s: %s", path, exc)
                    continue
                self._synced[path] = size

    def _coalesce(self, record: Record, path: str) -> None:
        key = (record.kind, record.name)
        held = self._latest.get(key)
        # One writer's reports are ordered by sequence number: its clock may
        # step back. Across writers, the newest report wins, as it would have
        # on the gateway had each been pushed at once.
        if held is None or (record.seq > held[0].seq if path == held[1] else record.ts >= held[0].ts):
            self._latest[key] = (record, path)

    # -- delivering -------------------------------------------------------

    def _undelivered(self) -> bool:
        return bool(self._latest) or any(t.offset != self._acked[p].offset for p, t in self._tails.items())

    def _flush_wanted(self) -> bool:
        if not self.follow:
            return True
        return any(t.ended or not self._alive.get(p, True) for p, t in self._tails.items()
                   if t.offset != self._acked[p].offset)

    def _deliver(self) -> bool:
        try:
            rejected = self.pusher.push([record for record, _ in self._latest.values()])
        except OSError as exc:
            if not self._stopping:
                self._note_failure(exc)
            return False
        for record, refusal in rejected:
            path = self._latest[(record.kind, record.name)][1]
            self._rejected_in[path] = self._rejected_in.get(path, 0) + 1
            # A name may hold lone surrogates: keep it printable for logs and summaries.
            name = ascii(exposition_name(record))[1:-1]
            if name not in self.rejected:
                who = "the gateway rejected" if isinstance(refusal, GatewayError) else "cannot push"
                logger.error("%s %s %s (pushed as %s); the other reports are not affected: %s",
                             who, record.kind, ascii(record.name), name, refusal)
            self.rejected[name] = str(refusal)
        self._latest.clear()
        return self._commit()

    def _commit(self) -> bool:
        """Write the checkpoint of every file read further than its last one."""
        ok = True
        for path, tail in self._tails.items():
            acked = self._acked[path]
            if tail.offset == acked.offset:
                continue
            ckpt = Checkpoint(tail.spool_id, tail.offset, tail.records, tail.last_seq, tail.ended,
                              acked.rejected + self._rejected_in.pop(path, 0))
            try:
                store_checkpoint(path, ckpt)
            except OSError as exc:
                # Delivered but not recorded: a later replay re-sends it, harmlessly.
                logger.error("cannot write the checkpoint of %s: %s", path, exc)
                self.last_error = str(exc)
                ok = False
                continue
            self.delivered_records += ckpt.records - acked.records
            self.delivered_bytes += ckpt.offset - acked.offset
            self._acked[path] = ckpt
        if self.on_progress is not None:
            self.on_progress(self.delivered_records, self.delivered_bytes)
        return ok

    def _note_failure(self, exc: OSError) -> None:
        first = not self.last_error
        self.last_error = str(exc)
        if isinstance(exc, GatewayError):
            kind = "answered with an error"
        elif isinstance(exc, TimeoutError):
            kind = "did not answer in time"
        else:
            kind = "is unreachable"
        log = logger.warning if first else logger.debug
        log("the gateway %s %s (%s); retrying with backoff, nothing is lost",
            self.pusher.gateway_url, kind, exc)

    # -- finishing --------------------------------------------------------

    def _writers_alive(self) -> bool:
        return any(self._alive.values())

    def _done(self) -> bool:
        return not self.follow or not self._writers_alive()

    def _handoff(self) -> bool:
        """Release the pod lock before exiting; False if work arrived meanwhile.

        A writer that saw the lock held just before it was released relies on
        this uploader, and its file already exists: one more scan after the
        release finds it.
        """
        if self.lock is None or not self.follow or self._stopping:
            return True
        self.lock.release()
        drained = self._scan(check_liveness=True)
        if drained and not self._undelivered() and not self._writers_alive():
            return True
        if self.lock.acquire():
            return False
        logger.info("another uploader took over %s", self.pod_dir)
        return True
