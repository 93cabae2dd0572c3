"""
The stamp rules of the input streams, before synchronization (no ROS).

A synchronizer (message_filters' approximate-time policy or ``ros/sync.py``'s) orders its
queues by stamp and drops the smallest stamp when a queue is full, so one absurd stamp can
stall it or empty it, and the pipeline restarts on a jump back.  ``StampGate`` decides,
message by message, what reaches the synchronizer:

* a stamp that is not a valid ROS time (negative, ``nanosec >= 1e9``) is refused
  (``stamp_invalid``);
* with a clock (``now_ns``), a stamp more than ``max_ahead_ns`` ahead of it is refused
  (``stamp_in_future``): a set stamped a day ahead is never synchronized nor published, and
  cannot make the next good frames look like a jump back;
* the newest accepted stamp over all inputs is the current timeline; a stamp within
  ``jump_ns`` of it passes at once (small disorder is the synchronizer's and the pipeline's
  business);
* a stamp further away (back: a bag played in a loop, a restarted driver; ahead: a pause, or
  an absurd stamp when no clock is known) is HELD, not passed: it may start a new timeline.
  The new timeline is taken only on consistent evidence: once EVERY input has delivered
  ``confirm`` messages on it.  Then the held messages are released in stamp order, and for
  a jump back the caller empties the synchronizer's queues first (``GateVerdict.reset``):
  one reset per timeline change, whatever the number of inputs.
* an input that delivers a message on the current timeline again shows that what it had
  held was a lone bad stamp: those messages are refused and counted
  (``stamp_jumped_back`` / ``stamp_jumped_ahead``), and neither the queues nor the tracks
  were touched.  A message far from both the timeline and the held candidate is refused
  too, as is the oldest held message of an input beyond ``capacity`` (the node passes
  ``sync.queue_size``: the gate holds no more per input than the synchronizer queues).

Real bag loops cost no frame: the held messages are released once the loop is confirmed
(``confirm`` frames later).  ``TIME_JUMP_CONFIRM`` = 3 messages per input: a lone set, or
two, stamped absurdly on every input (a fuzzer, a driver glitch) does not reset anything.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from persistence_ros.detections import NANOSECONDS

# Why the gate refused a message (``GateVerdict.rejected``; ``rejected.<reason>`` in the
# node's /diagnostics).
STAMP_REJECTIONS = ('stamp_invalid', 'stamp_in_future', 'stamp_jumped_back',
                    'stamp_jumped_ahead')
# A stamp this far from the current timeline may start a new one (the pipeline's restart
# threshold too: ``pipeline.TIME_JUMP_RESET_NS`` is this value).
TIME_JUMP_NS = 1_000_000_000
# Messages every input must deliver on a new timeline before it is taken.
TIME_JUMP_CONFIRM = 3


def stamp_problem(stamp) -> str:
    """Return 'stamp_invalid' for a ``builtin_interfaces/Time`` that is no valid time, else ''."""
    if int(stamp.sec) < 0 or not 0 <= int(stamp.nanosec) < NANOSECONDS:
        return 'stamp_invalid'
    return ''


@dataclass
class GateVerdict:
    """
    What to do after one ``StampGate.offer``.

    ``release``: ``(input index, item)`` to pass to the synchronizer now, in this order
    (empty while a message is held); ``rejected``: reason -> messages refused by this call
    (the offered one and held ones it discarded); ``reset``: the inputs jumped back together:
    empty the synchronizer's queues before releasing; ``jump_ns``: the confirmed jump (new
    timeline minus old, negative for a jump back).
    """

    release: List[Tuple[int, Any]] = field(default_factory=list)
    rejected: Dict[str, int] = field(default_factory=dict)
    reset: bool = False
    jump_ns: int = 0


class StampGate:
    """Per-message stamp rules of ``n_inputs`` streams; see the module docstring."""

    def __init__(self, n_inputs: int, jump_ns: int = TIME_JUMP_NS,
                 confirm: int = TIME_JUMP_CONFIRM, max_ahead_ns: Optional[int] = None,
                 capacity: int = 10):
        if n_inputs < 1 or confirm < 1 or jump_ns <= 0 or capacity < confirm:
            raise ValueError(f'StampGate needs n_inputs >= 1, confirm >= 1, jump_ns > 0 and '
                             f'capacity >= confirm, got {n_inputs}, {confirm}, {jump_ns}, '
                             f'{capacity}')
        self.n_inputs = int(n_inputs)
        self.jump_ns = int(jump_ns)
        self.confirm = int(confirm)
        self.capacity = int(capacity)
        self.max_ahead_ns = None if max_ahead_ns is None else int(max_ahead_ns)
        self.timeline_ns: Optional[int] = None
        self._held: List[List[Tuple[int, Any]]] = [[] for _ in range(self.n_inputs)]
        self._candidate_ns: Optional[int] = None
        self.resets = 0
        self.switches = 0

    @property
    def held(self) -> int:
        """Return the number of messages held for a candidate timeline."""
        return sum(len(h) for h in self._held)

    def _direction(self, stamp_ns: int) -> str:
        back = self.timeline_ns is not None and stamp_ns < self.timeline_ns
        return 'stamp_jumped_back' if back else 'stamp_jumped_ahead'

    def _discard(self, index: int, rejected: Counter) -> None:
        for stamp_ns, _ in self._held[index]:
            rejected[self._direction(stamp_ns)] += 1
        self._held[index] = []
        if not any(self._held):
            self._candidate_ns = None

    def offer(self, index: int, stamp, item: Any, now_ns: Optional[int] = None) -> GateVerdict:
        """
        Judge one message of input ``index`` stamped ``stamp`` (a ``builtin_interfaces/Time``).

        ``now_ns``: the caller's clock (None or 0: unknown, no future check).
        """
        verdict = GateVerdict()
        rejected: Counter = Counter()
        problem = stamp_problem(stamp)
        stamp_ns = int(stamp.sec) * NANOSECONDS + int(stamp.nanosec)
        if not problem and now_ns and self.max_ahead_ns is not None \
                and stamp_ns > int(now_ns) + self.max_ahead_ns:
            problem = 'stamp_in_future'
        if problem:
            rejected[problem] += 1
        elif self.timeline_ns is None or abs(stamp_ns - self.timeline_ns) <= self.jump_ns:
            if self._held[index]:  # back on the timeline: what it held was a lone outlier
                self._discard(index, rejected)
            self.timeline_ns = (stamp_ns if self.timeline_ns is None
                                else max(self.timeline_ns, stamp_ns))
            verdict.release.append((index, item))
        else:
            self._hold(index, stamp_ns, item, rejected, verdict)
        verdict.rejected = dict(rejected)
        return verdict

    def _hold(self, index: int, stamp_ns: int, item: Any, rejected: Counter,
              verdict: GateVerdict) -> None:
        """Hold a message off the timeline; switch timelines once every input confirms."""
        candidate = self._candidate_ns
        if candidate is not None and abs(stamp_ns - candidate) > self.jump_ns:
            # neither the timeline nor the candidate: this input's held ones go too
            self._discard(index, rejected)
            if self._candidate_ns is not None:  # other inputs still hold the candidate
                rejected[self._direction(stamp_ns)] += 1
                return
        held = self._held[index]
        held.append((stamp_ns, item))
        self._candidate_ns = (stamp_ns if self._candidate_ns is None
                              else max(self._candidate_ns, stamp_ns))
        if len(held) > self.capacity:
            rejected[self._direction(held[0][0])] += 1
            del held[0]
        if not all(len(h) >= self.confirm for h in self._held):
            return
        # every input is on the new timeline: take it, release what was held in stamp order
        old, new = self.timeline_ns, self._candidate_ns
        verdict.jump_ns = new - old
        verdict.reset = new < old
        self.resets += int(verdict.reset)
        self.switches += 1
        released = sorted(((s, i, m) for i, h in enumerate(self._held) for s, m in h),
                          key=lambda entry: (entry[0], entry[1]))
        verdict.release = [(i, m) for _, i, m in released]
        self._held = [[] for _ in range(self.n_inputs)]
        self._candidate_ns = None
        self.timeline_ns = new
