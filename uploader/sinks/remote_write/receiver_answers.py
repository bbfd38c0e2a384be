"""What a Prometheus remote-write receiver's answer means: by the spec, and by what real receivers were measured
to do (tests/test_remote_write.py, docs/design/scaling.md).

* 2xx: delivered.
* connection errors, timeouts, 408, 429, 502, 503, 504: an outage; :meth:`~.sink.RemoteWriter.push`
  raises OSError and the caller retries with backoff (after the ``Retry-After`` of a 429 or 503:
  :attr:`~uploader.sinks.http.StatusError.retry_after`).
* 400 and 413: the request's content is refused; it is halved until the
  refused samples stand alone, and those are returned as refusals.
* 500 and the other 5xx: Prometheus 2.42 answers 500 "too old sample" for one
  sample older than its out-of-order window and stores nothing of the
  request, so retrying it for ever would stall every later sample. A request
  answered so twice in a row is split like a 400; a sample alone whose answer
  names it ("too old", "out of bounds", "out of order") is refused, and one
  whose answer names nothing is an outage (raised).
* "duplicate sample for timestamp": the series already has a sample at that
  time, from an earlier send (at-least-once delivery resends after a crash):
  delivered, not refused.
* a sample that may be stored already: one an earlier uploader's push
  covered before it died (its checkpoints' ``sent_seq``, written before the
  push; such records go first, in requests of their own), or one of a request
  whose answer never came (a timeout, a cut connection, a proxy's 502/504).
  Prometheus refuses a request whole for one sample older than its series'
  newest, so a request answered "out of order sample" is split like any 400;
  such a sample alone answered "out of order sample" or "duplicate sample for
  timestamp" is taken as stored before: delivered, not refused.
* any 3xx (redirects are never followed: they would carry the credentials elsewhere), 401, 403, 404,
  405, 407, and VictoriaMetrics' 400 "unsupported path": the receiver refuses the sender (its
  credentials, tenant or address), not the samples, and never splits them. Raised as for an outage, as
  the gateway sink does: the loop backs off and gives up after its retry timeout, and the
  reports stay on disk for ``recover`` once the configuration is fixed.
  Refusing them instead would mark every report rejected for a wrong password.
* any other 4xx: refused, not retried (the spec forbids retrying a 4xx).

And one thing a receiver does without saying so: VictoriaMetrics keeps only the first
:data:`VM_MAX_LABEL_VALUE_BYTES` of a label value and answers 204 (measured); a parameter's value is a
label, and the reporter takes values up to 64 KiB. :class:`LongValues` warns of each such value once.
"""

from __future__ import annotations

import logging
import socket

from runai.reporter.spool import REMOTE_WRITE

from .. import RECEIVERS
from ..http import StatusError

__all__ = ["LongValues", "ReceiverError", "VM_MAX_LABEL_VALUE_BYTES", "may_have_arrived"]

logger = logging.getLogger(__name__)

# VictoriaMetrics cuts a label value to this many bytes of UTF-8 (its -maxLabelValueLen) and answers 204
# (measured: tests/test_receiver_answers.py); Prometheus keeps it whole.
VM_MAX_LABEL_VALUE_BYTES = 16 << 10
_LONG_VALUES_TOLD = 1_000  # values warned of, per uploader: a program reporting many cannot grow the set

_OUTAGES = (408, 429, 502, 503, 504)  # retried with backoff, without limit (408: the receiver's own timeout)
_CONTENT = (400, 413)  # the request's content is refused: split at once
# Not the content: nothing is refused, the loop backs off. A 3xx says the URL is wrong (a moved receiver, an
# http URL answered with a redirect to https): a configuration fix, like a 404.
_REFUSES_SENDER = (*range(300, 400), 401, 403, 404, 405, 407)
_NAMES_A_SAMPLE = ("too old", "out of bounds", "out of order")
_OUT_OF_ORDER = "out of order sample"  # Prometheus' answer to a sample older than its series' newest
_WRONG_PATH = "unsupported path"  # VictoriaMetrics answers a wrong path with 400 (measured), not 404
_PROXY_LOST_IT = (502, 504)  # a proxy's answer: the receiver behind it may have stored the request
# Prometheus' words, measured (VictoriaMetrics takes a resend with 204); Mimir's error id, from its runbook.
_ALREADY_THERE = ("duplicate sample for timestamp", "err-mimir-sample-duplicate-timestamp")


class ReceiverError(StatusError):
    """The remote-write receiver answered with an HTTP error status."""

    def __init__(self, status: int, body: str, retry_after: float | None = None) -> None:
        super().__init__(status, "", body, who=RECEIVERS[REMOTE_WRITE], retry_after=retry_after)
        self._words = body.lower()  # what the properties below search, lowered once (up to MAX_ANSWER_BYTES)

    @property
    def outage(self) -> bool:
        """The receiver is overloaded or away (408, 429, 502, 503, 504), or refuses the sender (3xx, 401, 403,
        404, 405, 407): the request is to be sent again later, not refused."""
        return (
            self.status in _OUTAGES
            or self.status in _REFUSES_SENDER
            or (self.status == 400 and _WRONG_PATH in self._words)
        )

    @property
    def content_refused(self) -> bool:
        """400, 413: the request's content is refused (split until the refused samples stand alone)."""
        return self.status in _CONTENT

    @property
    def names_a_sample(self) -> bool:
        return any(words in self._words for words in _NAMES_A_SAMPLE)

    @property
    def already_there(self) -> bool:
        return any(words in self._words for words in _ALREADY_THERE)

    @property
    def there_if_resent(self) -> bool:
        """A lone sample answered so is stored already, if it may have been stored before."""
        return self.status < 500 and (self.already_there or _OUT_OF_ORDER in self._words)


def may_have_arrived(exc: OSError) -> bool:
    """A request that failed so may have been stored all the same (its answer is unknown)."""
    if isinstance(exc, ReceiverError):
        return exc.status in _PROXY_LOST_IT
    return not isinstance(exc, (ConnectionRefusedError, socket.gaierror))


class LongValues:
    """Warns once per parameter value longer than VictoriaMetrics keeps of a label (:data:`VM_MAX_LABEL_VALUE_BYTES`).

    A warning, not a cap: the URL does not say which receiver it is, and Prometheus keeps the value whole.
    """

    def __init__(self) -> None:
        self._told: set[tuple[str, int]] = set()

    def check(self, name: str, value: str) -> None:
        if len(value) * 4 <= VM_MAX_LABEL_VALUE_BYTES:  # at most 4 bytes a character: short enough unencoded
            return
        size = len(value.encode())  # encodable: encoded_size() checked it
        key = (name, hash(value))
        if size <= VM_MAX_LABEL_VALUE_BYTES or key in self._told or len(self._told) >= _LONG_VALUES_TOLD:
            return
        self._told.add(key)
        logger.warning(
            "parameter %s has a value of %d bytes: a VictoriaMetrics receiver keeps only its first %d "
            "(-maxLabelValueLen) and says nothing; Prometheus keeps it whole. Report a shorter value "
            "(a summary, a hash or a path) to see all of it there",
            ascii(name),
            size,
            VM_MAX_LABEL_VALUE_BYTES,
        )
