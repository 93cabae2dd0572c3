"""
The early decision rule: when a track's p(persistent) makes it PERSISTENT or TRANSIENT.

Plain Python (no torch): the model configuration's ``decision`` section and the node's
``model.decision`` settings are an ``EarlyDecision``, so its defaults and checks live in one
place.  Its answers are ``TrackState``s (TENTATIVE while undecided).
"""

from dataclasses import dataclass

from persistence_ros.overrides import check_fields
from persistence_ros.stereo_track import TrackState


@dataclass
class EarlyDecision:
    """
    PERSISTENT when p >= hi, TRANSIENT when p <= lo, only after ``min_frames`` frames.

    ``keep_unsure_after`` (frames, 0: never): a track still undecided after that many frames
    is decided PERSISTENT, so a real object the model stays unsure about is published
    rather than lost (only PERSISTENT tracks are).
    """

    hi: float = 0.5
    lo: float = 0.1
    min_frames: int = 3
    recheck: bool = False
    keep_unsure_after: int = 0

    def __post_init__(self):
        """Check the types (``'9e-1'`` is read as 0.9, ``maybe`` is no bool) and the values."""
        check_fields(self, 'decision')
        if self.min_frames < 0:
            raise ValueError(f'decision.min_frames must be >= 0, got {self.min_frames}')
        if self.keep_unsure_after < 0:
            raise ValueError('decision.keep_unsure_after must be >= 0 (0: never), got '
                             f'{self.keep_unsure_after}')
        if not 0.0 <= self.lo < self.hi <= 1.0:
            raise ValueError(f'need 0 <= lo < hi <= 1, got lo={self.lo} hi={self.hi}')

    def decide(self, p: float, frames: int, previous: TrackState = TrackState.TENTATIVE
               ) -> TrackState:
        """
        Return the decision after ``frames`` frames with probability ``p``.

        A decided track keeps its decision unless ``recheck`` is set.
        """
        if previous != TrackState.TENTATIVE and not self.recheck:
            return previous
        if frames < self.min_frames:
            return previous if self.recheck else TrackState.TENTATIVE
        if p >= self.hi:
            return TrackState.PERSISTENT
        if p <= self.lo:
            return TrackState.TRANSIENT
        if self.keep_unsure_after and frames >= self.keep_unsure_after:
            return TrackState.PERSISTENT
        return previous if self.recheck else TrackState.TENTATIVE

    def needs_encoding(self, decision: TrackState) -> bool:
        """Return True if a track with this decision must still be run through the model."""
        return decision == TrackState.TENTATIVE or self.recheck
