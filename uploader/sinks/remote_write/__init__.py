"""The Prometheus remote-write sink: every report a sample at its own time (remote write 1.0).

* :mod:`.sink`: :class:`RemoteWriter`, sending requests and splitting them around refused samples;
* :mod:`.samples`: reports as samples, time-ordered, in requests under the caps;
* :mod:`.receiver_answers`: what each answer of a receiver means;
* :mod:`.write_request`: the protobuf of a write request, encoded by hand.

Importing it imports cramjam (snappy), not prometheus_client.
"""

from __future__ import annotations

from .receiver_answers import ReceiverError
from .samples import MAX_WRITE_BYTES, MAX_WRITE_SAMPLES
from .sink import RemoteWriter

__all__ = ["MAX_WRITE_BYTES", "MAX_WRITE_SAMPLES", "ReceiverError", "RemoteWriter"]
