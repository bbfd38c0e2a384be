"""The node agent's defaults and timings, defined once: the command line shows them, the agent uses them.

Standard library only: ``runai-uploader agent --help`` reads them.
"""

from __future__ import annotations

__all__ = [
    "GRACE_SECONDS",
    "IDLE_POLL_SECONDS",
    "IDLE_WATCHED_POLL_SECONDS",
    "LOCK_POLL_SECONDS",
    "LOOP_WINDOW_SECONDS",
    "DEAD_SHARE",
    "MAX_DELIVERIES",
    "MAX_IDLE_WATCHES",
    "MAX_PODS_PER_OWNER",
    "MAX_JUDGED_FILES",
    "METRICS_ADDRESS",
    "MIN_SLEEP_SECONDS",
    "NEW_POD_SECONDS",
    "OWNER_LOOP_SECONDS",
    "PASS_SECONDS",
    "OWNER_SHARE",
    "POLL_SECONDS",
    "REFUSED_POLL_SECONDS",
    "REJUDGE_SECONDS",
    "ROOT_LIST_SECONDS",
    "ROOT_POLL_SECONDS",
    "SERIES_LINGER_SECONDS",
    "STALE_SECONDS",
    "STOP_SECONDS",
]

# -- what its options default to ---------------------------------------------------

GRACE_SECONDS = 2.0  # a new live writer's job starts its own uploader in about 0.3 s; this leaves it room
MAX_DELIVERIES = 256  # pods delivered at once, a thread and a connection each
# Of those slots (docs/agent.md, "Who gets a slot"): one owner (a pod directory's uid) holds at most this share
# unless --max-deliveries-per-owner says (64 of 256), and this share is kept for pods with no writer alive (a
# live pod's delivery may hold its slot for ever: a dying pod must still find one).
OWNER_SHARE = 0.25
DEAD_SHARE = 0.25
METRICS_ADDRESS = "127.0.0.1"  # where its metrics are served unless told (in a pod, its IP)
# Pod directories of one owner (uid) followed at once; past it, a new one displaces that owner's longest-idle pod,
# or waits untracked. Measured (docs/agent.md, Measured): about 1.2 KiB of RSS per idle pod followed (and 0.35 KiB
# per untracked name), so even 10 owners at the bound stay far under the DaemonSet's 512Mi.
MAX_PODS_PER_OWNER = 10_000

# -- how often it looks ------------------------------------------------------------------

LOCK_POLL_SECONDS = 1.0  # an active pod's lock is probed this often: takeover within about a second
IDLE_POLL_SECONDS = 3.0  # an idle pod's directory mtime is compared this often (one stat): + a push, under 5 s
IDLE_WATCHED_POLL_SECONDS = 60.0  # an idle pod watched by inotify is still looked at this often: events are hints
ROOT_POLL_SECONDS = 5.0  # the spool directory's mtime is compared this often besides its watch (listed if changed)
ROOT_LIST_SECONDS = 60.0  # and it is listed this often whatever its mtime says (a change within its clock tick)
SERIES_LINGER_SECONDS = 120.0  # an idle pod's delivered counters stay this long: two scrapes see its final count
NEW_POD_SECONDS = 10.0  # a pod found this recently is looked at every LOCK_POLL_SECONDS even when idle
REJUDGE_SECONDS = 5.0  # a pod another uploader serves is judged again this often, if its files changed
REFUSED_POLL_SECONDS = 60.0  # a refused pod directory (unsafe, failing) is looked at again this often
STOP_SECONDS = 1.0  # what the deliveries get to stop; with the metrics server's 0.5 s, SIGTERM ends it in 2 s
# The shortest sleep between two passes, unless an event wakes the agent: each pass takes all the pods due.
MIN_SLEEP_SECONDS = 0.25
# The main loop's time per owner (a pod directory's uid), in windows of LOOP_WINDOW_SECONDS: an owner past
# OWNER_LOOP_SECONDS of it has its due pods set aside while another owner's are due (see .passes). A pass ends
# after PASS_SECONDS, so a pod that comes due meanwhile waits that long at most, and one look more.
LOOP_WINDOW_SECONDS = 1.0
OWNER_LOOP_SECONDS = 0.1
PASS_SECONDS = 0.25
POLL_SECONDS = 0.5  # how often a delivered pod's directory is read (it is not watched: see .delivery)
# /healthz answers 503 once the main loop has not turned for this long: it turns at least every
# ROOT_POLL_SECONDS, and judging a pod reads a bounded block; twelve times that is a wedge, not a slow disk.
STALE_SECONDS = 60.0

# Entries of one pod directory read per look (listing, judgement, signature): a pod holding more is judged from
# these, "at least" (as pending: its delivery sorts it out), and so costs the main loop tens of ms at most.
MAX_JUDGED_FILES = 1000

# -- what it takes from the node ---------------------------------------------------------

# Idle pods watched by inotify at most (about 1 KiB of kernel memory each), and never more than a quarter of the
# user's fs.inotify.max_user_watches: the agent runs as root, and the kubelet and containerd need root's watches.
MAX_IDLE_WATCHES = 16_384
