"""The runai reporter's uploader: tails a pod's spool and pushes it to a Pushgateway.

Run it as ``runai-uploader`` or ``python -m uploader``. Importing this package
is cheap on purpose: the training process imports :mod:`uploader.lock` and
:mod:`uploader.checkpoint`, and must never pull in ``prometheus_client`` or
``watchdog`` (those are imported by :mod:`uploader.push` and
:mod:`uploader.service` only).
"""
from __future__ import annotations

__all__: list[str] = []
