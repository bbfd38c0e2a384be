"""Which receivers a pod goes to when one command delivers many (``recover --all``, the node agent).

A job names its receivers when it starts, and its spool headers record their
kinds (never their URLs or credentials: :func:`runai.reporter.spool.receiver_kinds`).
A command that delivers a whole spool directory has its own receivers; a pod
goes only to those of the kinds its job named, so that a job that wrote only
to Prometheus by remote write is not also pushed to a gateway (that Prometheus
would scrape the gateway too, and count its samples twice). A pod written
before headers said so goes everywhere, as it always did; ``--any-receiver``
sends every pod everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, NamedTuple

from runai.reporter.settings import Settings
from runai.reporter.spool import GATEWAY, REMOTE_WRITE, receiver_kinds

from ..sinks import RECEIVERS

__all__ = ["ANY_RECEIVER", "Intended", "intended", "intended_sinks", "restrict"]

ANY_RECEIVER = "--any-receiver"  # the option that overrides the job's intent, named in each skip's reason
_OPTIONS = {GATEWAY: "--gateway", REMOTE_WRITE: "--remote-write"}


class Intended(NamedTuple):
    """The receivers (sinks) a pod goes to, of those given; none: skipped, and why (one line)."""

    sinks: tuple[str, ...]
    skipped: str | None = None


def intended_sinks(
    sinks: tuple[str, ...], pod_dir: str, *, any_receiver: bool = False, names: Iterable[str] | None = None
) -> Intended:
    """Those of *sinks* whose kinds the job of the pod at *pod_dir* named in its spool headers (those of its
    spool files *names*, if given)."""
    kinds = None if any_receiver else receiver_kinds(pod_dir, names)
    if kinds is None or (kinds and not kinds & _OPTIONS.keys()):  # unknown, or overridden: every one given
        return Intended(sinks)
    keep = tuple(sink for sink in sinks if sink in kinds)
    if keep:
        return Intended(keep)
    given = " and ".join(RECEIVERS[sink] for sink in sinks)
    if not kinds:
        return Intended(
            (),
            f"not sent: its job named no receiver (its reports are kept locally); send it by name "
            f"(runai-uploader recover --pod-uuid={os.path.basename(pod_dir)} and its receivers), or "
            f"give {ANY_RECEIVER} to send it to {given}",
        )
    named = sorted(kinds & _OPTIONS.keys())
    return Intended(
        (),
        f"not sent to {given}: its job sent only to {' and '.join(RECEIVERS[k] for k in named)}; "
        f"give {' and '.join(_OPTIONS[k] for k in named)} to send it there, or {ANY_RECEIVER} to "
        f"send it to {given} too",
    )


def restrict(settings: Settings, sinks: tuple[str, ...]) -> Settings:
    """*settings* with the URLs of the receivers not among *sinks* taken out."""
    if sinks == settings.sinks:
        return settings
    return dataclasses.replace(
        settings,
        gateway_url=settings.gateway_url if GATEWAY in sinks else None,
        remote_write_url=settings.remote_write_url if REMOTE_WRITE in sinks else None,
    )


def intended(settings: Settings, *, any_receiver: bool = False) -> tuple[Settings | None, str | None]:
    """*settings* for the receivers its pod's job named (:func:`intended_sinks`), or None and why it is skipped."""
    sinks, skipped = intended_sinks(settings.sinks, settings.pod_dir, any_receiver=any_receiver)
    return (restrict(settings, sinks), None) if sinks else (None, skipped)
