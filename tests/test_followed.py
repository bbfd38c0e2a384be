"""The uploader's per-file records (uploader/followed.py), with failures injected as OSErrors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import uploader.delivery.followed as followed
from runai.reporter.spool import SpoolWriter, load_checkpoint


def test_refusals_survive_a_checkpoint_that_could_not_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gateway refused a value, and the disk refused the checkpoint that records it: the next
    # checkpoint must still count the refusal, or finish() would report a clean delivery.
    pod_dir = str(tmp_path / "pod")
    writer = SpoolWriter(pod_dir, "pod")
    writer.write_metric("loss", 1.0)
    writer.close()
    files = followed.FollowedFiles(pod_dir)
    entry = files.follow(os.path.basename(writer.path), check_liveness=True)
    assert entry is not None
    list(entry.tail.read_all())
    entry.refused = 1
    real_store = followed.store_checkpoint
    failures = iter([OSError(28, "No space left on device")])

    def store_once_failing(path: str, ckpt: followed.Checkpoint, sink: str = "gateway") -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_store(path, ckpt, sink=sink)

    monkeypatch.setattr(followed, "store_checkpoint", store_once_failing)
    assert files.commit()[2] is not None
    assert files.commit()[2] is None
    ckpt = load_checkpoint(writer.path, writer.spool_id)
    assert ckpt is not None and ckpt.rejected == 1 and ckpt.records == 1
    files.close()


def test_a_dead_uploader_s_mark_outlives_a_commit_that_covers_part_of_it(tmp_path: Path) -> None:
    from runai.reporter.spool import REMOTE_WRITE

    pod_dir = str(tmp_path / "pod")
    writer = SpoolWriter(pod_dir, "pod")
    for i in range(10):
        writer.write_metric("loss", float(i))
    writer.close()
    name = os.path.basename(writer.path)
    # What a remote-write uploader leaves when it dies mid-push: the mark, and no progress.
    dead = followed.FollowedFiles(pod_dir, sink=REMOTE_WRITE)
    entry = dead.follow(name, check_liveness=True)
    assert entry is not None and len(list(entry.tail.read_all())) == 10
    dead.mark_sending()
    mark = load_checkpoint(writer.path, writer.spool_id, sink=REMOTE_WRITE)
    assert mark is not None and mark.records == 0 and mark.sent_seq == entry.tail.last_seq
    dead.close()

    files = followed.FollowedFiles(pod_dir, sink=REMOTE_WRITE)
    entry = files.follow(name, check_liveness=True)
    assert entry is not None and entry.resent_seq == mark.sent_seq
    first = entry.tail.read(120)  # a push that covers part of the mark only
    assert 0 < len(first) < 10 and all(entry.resent(record) for record in first)
    files.commit()
    kept = load_checkpoint(writer.path, writer.spool_id, sink=REMOTE_WRITE)
    assert kept is not None and kept.sent_seq == mark.sent_seq and kept.records == len(first)
    assert len(list(entry.tail.read_all())) == 10 - len(first)
    files.commit()
    done = load_checkpoint(writer.path, writer.spool_id, sink=REMOTE_WRITE)
    assert done is not None and done.sent_seq == 0 and done.records == 10 and entry.resent_seq == 0
    files.close()
