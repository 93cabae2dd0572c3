"""
Approximate-time synchronization of several message streams by header stamp.

``make_synchronizer`` uses ``message_filters.ApproximateTimeSynchronizer`` where that package
is importable (a normal ROS 2 install) and :class:`ApproximateTimeSynchronizer` below
otherwise: message_filters is not on PyPI, so this is a re-implementation of its Python
policy (ros2/message_filters ``src/message_filters/__init__.py``), with the same semantics:

* one queue per input, keyed by stamp (a second message with the same stamp replaces the
  first); a queue longer than ``queue_size`` drops its OLDEST stamp;
* each arriving message triggers a search: from every other queue, the stamps within
  ``slop`` of the new message's stamp, closest first; the first combination (in
  ``itertools.product`` order) whose spread ``max - min`` is strictly below ``slop`` is
  emitted (one message per input, in input order) and removed from the queues;
* messages are never emitted twice; out-of-order arrivals are matched like in-order ones.

Differences (documented, deliberate): the callback runs after the internal lock is released
(message_filters calls it under the lock), and :class:`ApproximateTimeSynchronizer` counts
messages received, emitted and dropped per input (``stats``).  The node's counters come from
:class:`SynchronizedSubscriptions`, the same for both backends: messages fed, sets emitted,
messages still queued (both keep one dict per input in ``queues``) and messages cleared by a
reset; what is left (fed - inputs x sets - queued - cleared) left a queue unmatched.

:class:`SynchronizedSubscriptions` owns the subscriptions for both backends and passes every
message through a ``stamp_gate.StampGate`` first (message_filters gets them through
``SimpleFilter`` inputs): a lone absurd stamp is refused and counted without touching the
queues, and the queues are emptied once, when every input jumped back together.  An input
with a byte limit is subscribed to serialized (``raw``) and a message longer than the limit
is refused before it is deserialized (``on_too_large``).
"""

import itertools
import threading
from typing import Callable, List, Optional, Sequence

from rclpy.serialization import deserialize_message

from persistence_ros.detections import NANOSECONDS, stamp_to_ns
from persistence_ros.stamp_gate import StampGate


def stamp_ns_of(msg) -> int:
    """Return ``msg.header.stamp`` as integer nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


class ApproximateTimeSynchronizer:
    """
    The message_filters approximate-time policy on plain inputs (``add(msg, index)``).

    ``queue_size`` bounds each input's queue; ``slop`` is in seconds.  Registered callbacks
    get one message per input, in input order.
    """

    def __init__(self, n_inputs: int, queue_size: int, slop: float):
        if n_inputs < 1:
            raise ValueError(f'n_inputs must be >= 1, got {n_inputs}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        if not slop > 0.0:
            raise ValueError(f'slop must be > 0 seconds (a set needs a spread < slop), '
                             f'got {slop}')
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(float(slop) * NANOSECONDS))
        self.queues: List[dict] = [{} for _ in range(n_inputs)]
        self._callbacks: List[Callable] = []
        self._lock = threading.Lock()
        self.received = [0] * n_inputs
        self.emitted = 0
        self.dropped = [0] * n_inputs  # overflow evictions and replaced duplicate stamps

    def register_callback(self, callback: Callable) -> None:
        """Call ``callback(*msgs)`` for every synchronized set."""
        self._callbacks.append(callback)

    # message_filters spelling, so either implementation can be used the same way.
    registerCallback = register_callback  # noqa: N815

    def add(self, msg, index: int, stamp_ns: Optional[int] = None) -> bool:
        """Add ``msg`` to input ``index``; return True if a set was emitted."""
        stamp = stamp_ns_of(msg) if stamp_ns is None else int(stamp_ns)
        with self._lock:
            queue = self.queues[index]
            self.received[index] += 1
            if stamp in queue:
                self.dropped[index] += 1
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.dropped[index] += 1
            msgs = self._search(stamp, index)
            if msgs is not None:
                self.emitted += 1
        if msgs is None:
            return False
        for callback in list(self._callbacks):
            callback(*msgs)
        return True

    def _search(self, stamp: int, index: int) -> Optional[Sequence]:
        candidates = []
        for i, queue in enumerate(self.queues):
            if i == index:
                continue
            near = sorted(((s, abs(s - stamp)) for s in queue if abs(s - stamp) <= self.slop_ns),
                          key=lambda item: item[1])
            if not near:
                return None
            candidates.append([s for s, _ in near])
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp)
            if max(stamps) - min(stamps) < self.slop_ns:
                if all(s in q for q, s in zip(self.queues, stamps)):
                    msgs = [q.pop(s) for q, s in zip(self.queues, stamps)]
                    return msgs
        return None

    def pending(self) -> List[int]:
        """Return the number of queued (not yet emitted) messages per input."""
        with self._lock:
            return [len(q) for q in self.queues]

    def clear(self) -> int:
        """Empty every queue; return the number of messages dropped (counted per input)."""
        with self._lock:
            for index, queue in enumerate(self.queues):
                self.dropped[index] += len(queue)
            dropped = sum(len(q) for q in self.queues)
            for queue in self.queues:
                queue.clear()
        return dropped


def message_filters_available() -> bool:
    """Return True if the real ``message_filters`` package is importable."""
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


class SynchronizedSubscriptions:
    """
    Subscriptions on several topics feeding an approximate-time synchronizer through a gate.

    ``inputs``: sequence of ``(msg_type, topic, qos_profile)``.  ``callback(*msgs)`` gets the
    synchronized set; ``on_receive(index, msg)`` (optional) is called for every message
    received, before the gate (rates, image sizes, the time a set waits); ``msg`` is None for
    one refused unread (``max_bytes``).  ``backend`` is 'message_filters' or 'builtin'
    ('auto': message_filters if importable).

    ``gate``: a ``StampGate`` over the inputs (None: every message goes straight in).  A
    message it refuses is reported to ``on_rejected(reasons, index, msg)``; when it confirms
    that every input jumped back (a bag played in a loop, a restarted driver) the queues are
    emptied once and ``on_time_jump(dropped, jump_ns)`` is called, then the held messages
    of the new sequence are fed.  Without that, the queues, full of the old sequence's
    latest stamps, would drop every new message as the oldest one (both implementations
    drop the smallest stamp) and nothing would ever be emitted again.  ``now_ns()``: the
    clock the gate checks stamps against (None: no future check).

    ``max_bytes``: per input, None or the most serialized bytes a message may have; such an
    input is subscribed to raw, a longer message is refused unread and reported to
    ``on_too_large(index, size, limit)`` (``too_large`` counts them per input), a shorter one
    is deserialized here and goes on as above.
    """

    def __init__(self, node, inputs, queue_size: int, slop: float, callback: Callable,
                 on_receive: Optional[Callable] = None, backend: str = 'auto',
                 gate: Optional[StampGate] = None,
                 on_time_jump: Optional[Callable[[int, int], None]] = None,
                 on_rejected: Optional[Callable] = None,
                 now_ns: Optional[Callable[[], int]] = None,
                 max_bytes: Optional[Sequence[Optional[int]]] = None,
                 on_too_large: Optional[Callable[[int, int, int], None]] = None):
        self.node = node
        self.n_inputs = len(inputs)
        self.max_bytes = list(max_bytes) if max_bytes is not None else [None] * len(inputs)
        if len(self.max_bytes) != len(inputs):
            raise ValueError(f'max_bytes needs one entry per input ({len(inputs)}), got '
                             f'{len(self.max_bytes)}')
        self._on_too_large = on_too_large
        self.too_large = [0] * len(inputs)
        self._on_receive = on_receive
        self._on_time_jump = on_time_jump
        self._on_rejected = on_rejected
        self._now_ns = now_ns
        self.gate = gate
        self._lock = threading.Lock()
        self.fed = 0
        self.emitted = 0
        self.cleared = 0
        if backend == 'auto':
            backend = 'message_filters' if message_filters_available() else 'builtin'
        self.backend = backend

        def emitted(*msgs):
            self.emitted += 1
            callback(*msgs)

        if backend == 'message_filters':
            import message_filters
            self._inputs = [message_filters.SimpleFilter() for _ in inputs]
            self.synchronizer = message_filters.ApproximateTimeSynchronizer(
                self._inputs, queue_size, slop)
            self.synchronizer.registerCallback(emitted)
            self._feed = lambda msg, index: self._inputs[index].signalMessage(msg)
        elif backend == 'builtin':
            self.synchronizer = ApproximateTimeSynchronizer(len(inputs), queue_size, slop)
            self.synchronizer.register_callback(emitted)
            self._feed = self.synchronizer.add
        else:
            raise ValueError(f"backend must be 'auto', 'message_filters' or 'builtin', "
                             f'got {backend!r}')
        self._subscriptions = [self._subscribe(i, *spec) for i, spec in enumerate(inputs)]

    def _subscribe(self, index: int, msg_type, topic: str, qos):
        if self.max_bytes[index] is None:
            return self.node.create_subscription(
                msg_type, topic, lambda msg: self.add(msg, index), qos)
        return self.node.create_subscription(
            msg_type, topic, lambda data: self.add_serialized(data, index, msg_type), qos,
            raw=True)

    def add_serialized(self, data: bytes, index: int, msg_type) -> None:
        """Take one serialized message of input ``index``: refuse it unread if too long."""
        limit = self.max_bytes[index]
        if limit is not None and len(data) > limit:
            self.too_large[index] += 1
            if self._on_receive is not None:   # received all the same, only not read
                self._on_receive(index, None)
            if self._on_too_large is not None:
                self._on_too_large(index, len(data), limit)
            return
        self.add(deserialize_message(data, msg_type), index)

    def add(self, msg, index: int) -> None:
        """Take one message of input ``index`` (the subscriptions' callback)."""
        if self._on_receive is not None:
            self._on_receive(index, msg)
        if self.gate is None:
            release = [(index, msg)]
        else:
            now = self._now_ns() if self._now_ns is not None else None
            with self._lock:
                verdict = self.gate.offer(index, msg.header.stamp, msg, now)
            if verdict.rejected and self._on_rejected is not None:
                self._on_rejected(verdict.rejected, index, msg)
            if verdict.reset:
                dropped = self.clear()
                if self._on_time_jump is not None:
                    self._on_time_jump(dropped, verdict.jump_ns)
            release = verdict.release
        for i, item in release:
            self.fed += 1
            self._feed(item, i)

    def pending(self) -> int:
        """Return the number of messages waiting in the synchronizer's queues."""
        lock = getattr(self.synchronizer, 'lock', None) or self.synchronizer._lock
        with lock:
            return sum(len(q) for q in self.synchronizer.queues)

    def unmatched(self) -> int:
        """Return the messages that left a queue without being synchronized (not by a reset)."""
        return max(0, self.fed - self.n_inputs * self.emitted - self.pending() - self.cleared)

    def clear(self) -> int:
        """Empty the synchronizer's queues; return the number of messages dropped."""
        if self.backend == 'builtin':
            dropped = self.synchronizer.clear()
        else:
            # message_filters keeps one dict per input in ``queues``, guarded by ``lock``
            # (ros2/message_filters TimeSynchronizer; ApproximateTimeSynchronizer inherits
            # them).
            with self.synchronizer.lock:
                dropped = sum(len(q) for q in self.synchronizer.queues)
                for queue in self.synchronizer.queues:
                    queue.clear()
        self.cleared += dropped
        return dropped

    def destroy(self) -> None:
        """Destroy the subscriptions."""
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
