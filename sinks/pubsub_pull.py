"""The streaming job's own Pub/Sub pull path: many messages per pull, acknowledged only after the
commit that holds them, their ack deadline extended while they are in flight.

Beam's DirectRunner acknowledges what it pulls before anything is written (and pulls 10 messages a
request), so a stop loses up to a request's worth of records. ``Puller`` leaves that decision to the
job: it pulls (``pull``), keeps the leases of what it pulled alive from a background thread, and
forgets a message only when the job acknowledges it (``ack``, after its commit) or gives it back
(``release``: redelivered at once). A process killed with messages in flight acknowledges nothing:
Pub/Sub redelivers them when their deadline passes, and the job finds in the store what it had
already committed of them.
"""

from __future__ import annotations

import dataclasses
import threading

from google.api_core import exceptions as gexc

# Pub/Sub accepts at most 2,500 ack ids a request (and 512 kB); stay well below.
_IDS_PER_REQUEST = 1_000
# A pull returns at most this many messages (Pub/Sub's own limit per pull request).
MAX_PULL = 1_000


@dataclasses.dataclass(frozen=True)
class Received:
    ack_id: str
    message_id: str
    data: bytes
    attributes: dict
    publish_time_us: int


class Puller:
    """Pull from ``subscription`` and hold the messages' leases until they are acked or released."""

    def __init__(self, subscription: str, *, ack_deadline_s: int = 60, client=None):
        from google.cloud import pubsub_v1

        self._subscription = subscription
        self._deadline_s = ack_deadline_s
        self._client = client or _subscriber_client()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lease = threading.Thread(target=self._extend_leases, name="pubsub-lease", daemon=True)
        self._lease.start()

    def pull(self, max_messages: int = MAX_PULL, timeout_s: float = 1.0) -> list[Received]:
        """Up to ``max_messages`` (at most ``MAX_PULL``) messages, or none within about ``timeout_s``."""
        try:
            response = self._client.pull(request={"subscription": self._subscription,
                                                  "max_messages": min(max_messages, MAX_PULL)},
                                         timeout=timeout_s)
        except (gexc.DeadlineExceeded, gexc.RetryError, gexc.ServiceUnavailable):
            return []
        received = [Received(r.ack_id, r.message.message_id, bytes(r.message.data), dict(r.message.attributes),
                             _micros(r.message.publish_time)) for r in response.received_messages]
        with self._lock:
            self._held.update(r.ack_id for r in received)
        return received

    def ack(self, ack_ids: list[str]) -> int:
        """Acknowledge (after their commit): Pub/Sub will not deliver them again. Returns how many
        could not be acknowledged (the service failed or timed out): those messages come back, and
        the job recognises what it committed of them (``redelivered``), so a failed ack loses
        nothing and must not stop the job."""
        self._forget(ack_ids)
        failed = 0
        for chunk in _chunks(ack_ids):
            try:
                self._client.acknowledge(request={"subscription": self._subscription, "ack_ids": chunk})
            except gexc.GoogleAPICallError:
                failed += len(chunk)
        return failed

    def release(self, ack_ids: list[str]) -> None:
        """Give messages back unprocessed: Pub/Sub redelivers them at once."""
        self._forget(ack_ids)
        for chunk in _chunks(ack_ids):
            self._client.modify_ack_deadline(request={"subscription": self._subscription, "ack_ids": chunk,
                                                      "ack_deadline_seconds": 0})

    def close(self) -> None:
        """Stop extending leases; messages still held are redelivered when their deadline passes."""
        self._stop.set()
        self._lease.join(timeout=5)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._held)

    def _forget(self, ack_ids: list[str]) -> None:
        with self._lock:
            self._held.difference_update(ack_ids)

    def _extend_leases(self) -> None:
        while not self._stop.wait(self._deadline_s / 3):
            with self._lock:
                held = sorted(self._held)
            for chunk in _chunks(held):
                try:
                    self._client.modify_ack_deadline(request={"subscription": self._subscription, "ack_ids": chunk,
                                                              "ack_deadline_seconds": self._deadline_s})
                except gexc.GoogleAPICallError:
                    pass   # an id acked meanwhile, or a passing error: the next round tries again


def _subscriber_client():
    """A SubscriberClient whose pull responses may be of any size. Against the emulator
    (PUBSUB_EMULATOR_HOST) the library's channel keeps gRPC's 4 MB default, which a pull of a few
    dozen Avro containers exceeds (measured: 100 messages of 80 kB fail with ResourceExhausted)."""
    import os

    import grpc
    from google.cloud import pubsub_v1
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        return pubsub_v1.SubscriberClient()   # its own channel has no limit
    channel = grpc.insecure_channel(host, options=[("grpc.max_receive_message_length", -1),
                                                   ("grpc.max_send_message_length", -1)])
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def _chunks(ids: list[str]):
    for start in range(0, len(ids), _IDS_PER_REQUEST):
        yield ids[start:start + _IDS_PER_REQUEST]


def _micros(timestamp) -> int:
    """A protobuf Timestamp (or the client's DatetimeWithNanoseconds) as microseconds since the epoch."""
    if hasattr(timestamp, "seconds") and hasattr(timestamp, "nanos"):
        return timestamp.seconds * 1_000_000 + timestamp.nanos // 1_000
    return int(round(timestamp.timestamp() * 1_000_000))
