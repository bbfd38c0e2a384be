"""What both sinks keep, whatever their receiver: where it is, for which pod, and how the pushes went."""

from __future__ import annotations

from runai.reporter.settings import check_pod_uuid

__all__ = ["SinkBase"]


class SinkBase:
    """A sink's common state (the part of :class:`~uploader.sinks.Sink` that is data); each sink subclasses it."""

    def __init__(self, url: str, pod_uuid: str, timeout: float) -> None:
        self.url = url
        self.pod_uuid = check_pod_uuid(pod_uuid)  # on the wire as UTF-8: the gateway's grouping key, a series' label
        self.timeout = timeout  # seconds one request may take, answer included
        self.pushes = 0  # HTTP requests that succeeded
        self.reached = True  # some request of the last push may have reached the receiver
