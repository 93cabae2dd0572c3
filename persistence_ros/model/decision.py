"""
The early decision rule: when a track's p(persistent) makes it PERSISTENT or TRANSIENT.

Plain Python (no torch): the model configuration's ``decision`` section is an
``EarlyDecision``, so its defaults and checks live in one place.
"""

from dataclasses import dataclass
import enum

from persistence_ros.overrides import check_fields


class Decision(enum.IntEnum):
    """Early decision of one track."""

    UNDECIDED = 0
    PERSISTENT = 1
    TRANSIENT = 2


@dataclass
class EarlyDecision:
    """PERSISTENT when p >= hi, TRANSIENT when p <= lo, only after ``min_frames`` frames."""

    hi: float = 0.9
    lo: float = 0.1
    min_frames: int = 3
    recheck: bool = False

    def __post_init__(self):
        """Check the types (``'9e-1'`` is read as 0.9, ``maybe`` is no bool) and the values."""
        check_fields(self, 'decision')
        if self.min_frames < 0:
            raise ValueError(f'decision.min_frames must be >= 0, got {self.min_frames}')
        if not 0.0 <= self.lo < self.hi <= 1.0:
            raise ValueError(f'need 0 <= lo < hi <= 1, got lo={self.lo} hi={self.hi}')

    def decide(self, p: float, frames: int, previous: Decision = Decision.UNDECIDED
               ) -> Decision:
        """
        Return the decision after ``frames`` frames with probability ``p``.

        A decided track keeps its decision unless ``recheck`` is set.
        """
        if previous != Decision.UNDECIDED and not self.recheck:
            return previous
        if frames < self.min_frames:
            return previous if self.recheck else Decision.UNDECIDED
        if p >= self.hi:
            return Decision.PERSISTENT
        if p <= self.lo:
            return Decision.TRANSIENT
        return previous if self.recheck else Decision.UNDECIDED

    def needs_encoding(self, decision: Decision) -> bool:
        """Return True if a track with this decision must still be run through the model."""
        return decision == Decision.UNDECIDED or self.recheck
