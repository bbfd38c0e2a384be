"""The uploader's per-file records (uploader/followed.py), with failures injected as OSErrors."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import uploader.followed as followed
from runai.reporter.spool import SpoolWriter, load_checkpoint


def test_refusals_survive_a_checkpoint_that_could_not_be_written(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
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
