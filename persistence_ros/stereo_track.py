"""
A stereo track's state and decision, and the persistence filter interface (the base module).

Every module that speaks of a track's state uses :class:`TrackState`; its values are the
``Track.msg`` constants (``TENTATIVE=0``, ``PERSISTENT=1``, ``TRANSIENT=2``; a test keeps
them equal) and its text form is ``state.name.lower()`` (``'persistent'``), as JSON outputs
and logs write it.  :class:`StereoTrackHistory` is what a filter sees of one stereo track,
:class:`FilterDecision` what it answers, :class:`PersistenceFilter` the interface every
filter implements (the baselines in ``baselines``, gbdt in ``gbdt``, the learned one in
``model.persistence_filter``; ``filter_factory`` builds any of them).

This module imports nothing of the package but the 2D track observation type: features,
filters, the pipeline and the ROS adapters depend on it, never the other way round.
"""

import abc
from dataclasses import dataclass, field
import enum
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from persistence_ros.timing import NullTimer, StageTimer
from persistence_ros.tracking import TrackObservation


class TrackState(enum.IntEnum):
    """Decision state of a stereo track; the values are ``Track.msg``'s constants."""

    TENTATIVE = 0   # not decided yet
    PERSISTENT = 1  # a real, persistent object
    TRANSIENT = 2   # a reflection, glare or detector false positive

    @property
    def label(self) -> str:
        """Return the lower-case name (``'persistent'``), the text form in JSON and logs."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: Union['TrackState', int, str]) -> 'TrackState':
        """Return the state of a ``Track.msg`` constant, a name (any case) or a state."""
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f'unknown track state {value!r}; one of '
                                 f'{[s.label for s in cls]}') from None
        return cls(int(value))


@dataclass
class StereoTrackHistory:
    """
    What a filter sees of one stereo track (a left and a right 2D track paired).

    ``left`` / ``right`` are the 2D tracks' observation histories (oldest first, bounded by
    the tracker window; ``TrackObservation.crop`` holds an RGB crop when images were given).
    ``stamps_ns``, ``epipolar_residuals`` (pixels, NaN where a side was not matched) and
    ``points`` (N x 3, metres in the left optical frame, NaN rows where triangulation was
    invalid) are aligned per synchronized frame since the pair formed (bounded too); a
    frame's stamp is the left camera's.  ``right_stamps_ns``, aligned with them, holds the
    right camera's stamp of each frame (it may differ by the synchroniser's slop); empty
    means equal to ``stamps_ns``.  ``frames_observed`` counts the synchronized frames in
    which at least one side was matched to a detection.  ``left_start_ns`` /
    ``right_start_ns``: the stamps at which the 2D tracks were born (None: unknown, the
    first observation of the history is used), so a track's age does not depend on how much
    history is kept.
    """

    id: int
    left_track_id: int
    right_track_id: int
    left: Sequence[TrackObservation] = field(default_factory=list)
    right: Sequence[TrackObservation] = field(default_factory=list)
    stamps_ns: Sequence[int] = field(default_factory=list)
    epipolar_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    frames_observed: int = 0
    right_stamps_ns: Sequence[int] = field(default_factory=list)
    left_start_ns: Optional[int] = None
    right_start_ns: Optional[int] = None


@dataclass
class FilterDecision:
    """
    A filter's output for one track at one frame.

    ``attention``: weights over the frames the filter looked at (oldest first, sums to 1),
    None for filters without attention; ``frame_stamps_ns``: those frames' stamps (None:
    the last ``len(attention)`` stamps of the track).
    """

    probability: float
    state: TrackState = TrackState.TENTATIVE
    attention: Optional[np.ndarray] = None
    frame_stamps_ns: Optional[List[int]] = None

    def __post_init__(self):
        """Accept a state's constant or name; refuse anything else."""
        self.state = TrackState.parse(self.state)


class PersistenceFilter(abc.ABC):
    """
    Interface of every persistence filter (baselines, gbdt and the learned model).

    ``update`` is called once per synchronized frame with every live stereo track and
    returns a decision per track id.  Decisions latch: once a track is PERSISTENT or
    TRANSIENT it keeps that state until it ends, so "frames to decision" is well defined.
    Filter state is pruned to the ids passed in, so it stays bounded.
    """

    name: str = 'filter'
    #: True if the filter reads ``TrackObservation.crop`` (the caller must pass images).
    uses_images: bool = False
    #: What it reads of a matched observation's crop when ``uses_images``: ``'crop'`` (the
    #: RGB crop) or ``'statistics'`` (only ``crop_statistics``: the pipeline stores those
    #: three numbers in ``TrackObservation.crop_stats`` and no crop).
    appearance_input: str = 'crop'
    #: The caller's per-stage timer (``set_timer``); a filter may split its time with laps.
    timer: StageTimer = NullTimer()

    @abc.abstractmethod
    def update(self, tracks: Sequence[StereoTrackHistory]) -> Dict[int, FilterDecision]:
        """Return a decision for every live stereo track (called once per frame)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all per-track state (start of a new sequence)."""

    def set_calibration(self, calibration) -> None:
        """Receive the rig's ``StereoCalibration`` (the pipeline calls this; default: ignore)."""

    def set_timer(self, timer: StageTimer) -> None:
        """
        Receive the pipeline's ``StageTimer``.

        A filter may charge parts of ``update`` to the pipeline's stages (``timer.lap``: the
        learned filter's ``features`` and ``model``); what it does not charge is the
        pipeline's ``decision`` stage.
        """
        self.timer = timer

    def diagnostics(self) -> Dict[str, object]:
        """Return values the node reports on ``/diagnostics`` (``filter.<key>``); default none."""
        return {}
