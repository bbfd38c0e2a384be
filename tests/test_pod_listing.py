"""Looks at a pod directory bounded in entries (the agent) and listed again only when it changed (a delivery)."""

from __future__ import annotations

import os

from uploader.agent.listing import list_pod
from uploader.delivery.listing import SETTLED_NS, PodListing


def _pod(tmp_path: os.PathLike[str], files: int) -> str:
    path = os.path.join(str(tmp_path), "spool", "pod-a")
    os.makedirs(path, 0o700)
    os.chmod(os.path.dirname(path), 0o700)
    for i in range(files):
        open(os.path.join(path, f"w{i}-{i:08x}.jsonl"), "w").close()
    return path


def test_a_look_reads_at_most_its_limit_of_entries_and_says_it_stopped_short(tmp_path) -> None:
    pod = _pod(tmp_path, 30)
    open(os.path.join(pod, "uploader.lock"), "w").close()
    short = list_pod(pod, limit=10)
    assert not short.complete and len(short.names) <= 10 and list(short.names) == sorted(short.names)
    whole = list_pod(pod, limit=31)
    assert whole.complete and len(whole.names) == 30  # the lock file is an entry, not a spool file


def test_a_delivery_lists_its_pod_again_only_once_its_mtime_moved(tmp_path) -> None:
    pod = _pod(tmp_path, 3)
    settled = os.stat(pod).st_mtime_ns - 2 * SETTLED_NS  # as if made two seconds ago
    os.utime(pod, ns=(settled, settled))
    listing = PodListing(pod)
    assert len(listing.names(set())) == 3
    done = {"w0-00000000.jsonl"}  # (a delivery's done files only grow)
    assert listing.names(done) == ["w1-00000001.jsonl", "w2-00000002.jsonl"]  # done: left out
    os.rename(os.path.join(pod, "w1-00000001.jsonl"), os.path.join(pod, ".hidden"))
    os.utime(pod, ns=(settled, settled))  # a change its mtime does not show: the cached names stand
    assert listing.names(done) == ["w1-00000001.jsonl", "w2-00000002.jsonl"]
    open(os.path.join(pod, "w3-00000003.jsonl"), "w").close()  # the mtime moves: listed again (not yet settled)
    assert listing.names(done) == ["w2-00000002.jsonl", "w3-00000003.jsonl"]
