"""The runai reporter's uploader: tails a pod's spool and delivers it to a Pushgateway and/or a remote-write receiver.

Run it as ``runai-uploader`` or ``python -m uploader``. Importing this package
is cheap on purpose: ``--help`` needs neither ``prometheus_client`` nor
``watchdog``, which only the modules that push and watch import, and the
commands import those only when they run. The training process never imports this
package: what both sides share lives in :mod:`runai.reporter`.
"""

from __future__ import annotations

__all__: list[str] = []
