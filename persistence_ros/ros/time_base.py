"""
One time base for everything the node publishes.

Outputs made from a frame carry that frame's input stamp.  What the node publishes on its own
(``/diagnostics``) is stamped here:

* without ``use_sim_time``: the node's clock (system time, the clock of live drivers);
* with ``use_sim_time`` and a ``/clock`` received: the simulated time (a bag played with
  ``--clock``, ``persistence-ros replay``);
* with ``use_sim_time`` and no ``/clock`` yet (a bag played without ``--clock``): rclpy's
  time is 0, which would put the message in 1970, decades before the data.  The newest input
  stamp the node has seen is used instead, and the missing clock is reported: a rate-limited
  warning and the ``clock.*`` values of ``/diagnostics``.  Before any input, nothing can be
  stamped on the inputs' clock: the caller publishes nothing.

The diagnostics timer itself runs on a steady clock (``steady_clock``): a timer on simulated
time would never fire without ``/clock``, and the missing clock would go unreported.
"""

from typing import Dict, Optional, Tuple

from rclpy.clock import Clock, ClockType

CLOCK_SOURCES = ('system', 'sim', 'input', 'none')


def steady_clock() -> Clock:
    """Return a steady clock for timers that must fire whatever the ROS time does."""
    return Clock(clock_type=ClockType.STEADY_TIME)


class TimeBase:
    """The stamp of a node's own messages (module docstring); counts a missing /clock."""

    def __init__(self, node):
        self.node = node
        self.newest_input_ns: Optional[int] = None
        self.missing_clock = 0  # stamps given while use_sim_time was on and no /clock came

    def saw_input(self, stamp_ns: int) -> None:
        """Remember an input stamp (the newest one stamps diagnostics without a /clock)."""
        stamp_ns = int(stamp_ns)
        if stamp_ns > 0 and (self.newest_input_ns is None or stamp_ns > self.newest_input_ns):
            self.newest_input_ns = stamp_ns

    def uses_sim_time(self) -> bool:
        """Return True if the node runs on simulated time (parameter ``use_sim_time``)."""
        node = self.node
        return bool(node.has_parameter('use_sim_time')
                    and node.get_parameter('use_sim_time').value)

    def stamp_ns(self) -> Tuple[Optional[int], str]:
        """
        Return (stamp, source) for a message of the node's own, source one of CLOCK_SOURCES.

        The stamp is None (source 'none') when there is no time on the inputs' clock yet.
        """
        now = self.node.get_clock().now().nanoseconds
        if not self.uses_sim_time():
            return now, 'system'
        if now > 0:
            return now, 'sim'
        if self.newest_input_ns is not None:
            self.missing_clock += 1
            return self.newest_input_ns, 'input'
        return None, 'none'

    def values(self, source: str) -> Dict[str, object]:
        """Return the ``clock.*`` diagnostics values."""
        return {'clock.source': source, 'clock.use_sim_time': self.uses_sim_time(),
                'clock.missing': self.missing_clock}
