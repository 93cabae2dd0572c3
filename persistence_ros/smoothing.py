"""
Smoothed 3D tracks: a constant-velocity Kalman filter per PERSISTENT stereo track.

State ``[x, y, z, vx, vy, vz]`` in the left optical frame (metres, metres per second), time
in seconds from the frames' stamps (the rig's frame rate, 10-60 fps, may vary).  Motion model:
constant velocity driven by white-noise acceleration (the continuous model, so that the same
setting behaves alike at any frame rate): over ``dt`` seconds ``Q = q [[dt^3/3, dt^2/2],
[dt^2/2, dt]]`` per axis with ``q = acceleration_noise^2`` (m^2/s^3).  Measurement: a
triangulated point with the covariance the stereo geometry gives it
(``stereo.Triangulator.point_covariance``: pixel noise propagated through both projections,
so the depth variance grows with ``(Z^2 / (f B))^2`` and the ellipsoid lies along the
viewing ray).

A measurement whose innovation is farther than ``gate`` (squared Mahalanobis distance) is
an outlier (a wrong stereo match, a 2D tracker that jumped): it is not used; after
``max_outliers`` outliers in a row the filter restarts at the measurement (the object did
move there).  Without a measurement for longer than ``max_gap_s`` the estimate is dropped and
the next measurement starts a new one.

Written with numpy: filterpy is unmaintained, and ``cv2.KalmanFilter`` cannot take a
measurement covariance that changes at every step.
"""

from dataclasses import dataclass
import math
from typing import Dict, Optional

import numpy as np

from persistence_ros.overrides import check_fields, require

_EYE3 = np.eye(3)


@dataclass(frozen=True)
class SmoothingConfig:
    """
    The 3D Kalman filter of persistent tracks (section ``smoothing``; module docstring).

    ``enabled``: smooth at all (False: no smoothed state is published);
    ``acceleration_noise``: m/s^2, the white-noise acceleration of the constant-velocity
    model (larger follows manoeuvres faster, smooths less); ``initial_velocity_sigma``: m/s,
    the velocity uncertainty of a new filter; ``gate``: squared Mahalanobis distance above
    which a measurement is an outlier (16.27: chi-square, 3 degrees of freedom, p = 0.999);
    ``max_outliers``: outliers in a row after which the filter restarts at the measurement;
    ``max_gap_s``: seconds without a measurement after which the estimate is dropped.
    """

    enabled: bool = True
    acceleration_noise: float = 4.0
    initial_velocity_sigma: float = 3.0
    gate: float = 16.27
    max_outliers: int = 3
    max_gap_s: float = 0.5

    def __post_init__(self):
        """Check types and values."""
        check_fields(self, 'smoothing')
        for name in ('acceleration_noise', 'initial_velocity_sigma', 'gate', 'max_gap_s'):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0.0, f'smoothing.{name}',
                    'a finite number > 0', value)
        require(self.max_outliers >= 1, 'smoothing.max_outliers', 'an integer >= 1',
                self.max_outliers)


@dataclass
class SmoothedState:
    """A filter's estimate at one stamp: position, velocity and their 3x3 covariances."""

    position: np.ndarray
    velocity: np.ndarray
    position_covariance: np.ndarray
    velocity_covariance: np.ndarray


class ConstantVelocityKalman:
    """One track's filter (module docstring); start it with a first measurement."""

    def __init__(self, config: SmoothingConfig, stamp_ns: int, point: np.ndarray,
                 covariance: np.ndarray):
        self.config = config
        self.x = np.concatenate([np.asarray(point, dtype=np.float64), np.zeros(3)])
        self.P = np.zeros((6, 6))
        self.P[:3, :3] = covariance
        self.P[3:, 3:] = _EYE3 * config.initial_velocity_sigma ** 2
        self.stamp_ns = int(stamp_ns)
        self.last_update_ns = int(stamp_ns)
        self.outliers = 0

    def predict(self, stamp_ns: int) -> None:
        """Move the estimate to ``stamp_ns`` (no change for a stamp not after the last)."""
        dt = (int(stamp_ns) - self.stamp_ns) * 1e-9
        if dt <= 0.0:
            return
        q = self.config.acceleration_noise ** 2
        self.x[:3] += dt * self.x[3:]
        p = self.P
        # F P F^T with F = [[I, dt I], [0, I]], written out on the 3x3 blocks
        pp, pv, vv = p[:3, :3], p[:3, 3:], p[3:, 3:]
        new_pp = pp + dt * (pv + pv.T) + dt * dt * vv + _EYE3 * (q * dt ** 3 / 3.0)
        new_pv = pv + dt * vv + _EYE3 * (q * dt * dt / 2.0)
        self.P = np.block([[new_pp, new_pv], [new_pv.T, vv + _EYE3 * (q * dt)]])
        self.stamp_ns = int(stamp_ns)

    def update(self, point: np.ndarray, covariance: np.ndarray) -> bool:
        """Use a measurement at the current stamp; return False (not used) for an outlier."""
        innovation = np.asarray(point, dtype=np.float64) - self.x[:3]
        s = self.P[:3, :3] + covariance
        try:
            s_inv = np.linalg.inv(s)
        except np.linalg.LinAlgError:
            return False
        if float(innovation @ s_inv @ innovation) > self.config.gate:
            self.outliers += 1
            return False
        gain = self.P[:, :3] @ s_inv                          # (6, 3)
        self.x += gain @ innovation
        # Joseph form, then symmetrised: a measurement ellipsoid along the viewing ray is
        # nearly flat, and rounding asymmetry would otherwise grow until P is not a covariance
        i_kh = np.eye(6)
        i_kh[:, :3] -= gain
        p = i_kh @ self.P @ i_kh.T + gain @ covariance @ gain.T
        self.P = 0.5 * (p + p.T)
        self.outliers = 0
        self.last_update_ns = self.stamp_ns
        return True

    def state(self) -> SmoothedState:
        """Return the current estimate (copies)."""
        return SmoothedState(self.x[:3].copy(), self.x[3:].copy(), self.P[:3, :3].copy(),
                             self.P[3:, 3:].copy())


def _usable(point: Optional[np.ndarray], covariance: Optional[np.ndarray]) -> bool:
    return (point is not None and covariance is not None and bool(np.all(np.isfinite(point)))
            and bool(np.all(np.isfinite(covariance))))


class TrackSmoother:
    """The filters of every smoothed track, by track id; ``step`` once per track and frame."""

    def __init__(self, config: Optional[SmoothingConfig] = None):
        self.config = config if config is not None else SmoothingConfig()
        self._filters: Dict[int, ConstantVelocityKalman] = {}
        self.outliers = 0
        self.restarts = 0

    def __contains__(self, track_id: int) -> bool:
        """Return True if the track has a filter."""
        return track_id in self._filters

    def step(self, track_id: int, stamp_ns: int, point: Optional[np.ndarray] = None,
             covariance: Optional[np.ndarray] = None) -> Optional[SmoothedState]:
        """
        Advance a track's filter to ``stamp_ns`` with this frame's point (None: no point).

        Return the estimate, or None while the track has none (no point yet, or none for
        longer than ``max_gap_s``).
        """
        config = self.config
        if not config.enabled:
            return None
        kalman = self._filters.get(track_id)
        gap_ns = config.max_gap_s * 1e9
        if kalman is not None and int(stamp_ns) - kalman.last_update_ns > gap_ns:
            del self._filters[track_id]  # too long without a measurement
            kalman = None
        if not _usable(point, covariance):
            if kalman is None:
                return None
            kalman.predict(stamp_ns)
            return kalman.state()
        if kalman is None:
            kalman = self._filters[track_id] = ConstantVelocityKalman(config, stamp_ns, point,
                                                                      covariance)
            return kalman.state()
        kalman.predict(stamp_ns)
        if not kalman.update(point, covariance):
            self.outliers += 1
            if kalman.outliers >= config.max_outliers:
                self.restarts += 1
                kalman = self._filters[track_id] = ConstantVelocityKalman(
                    config, stamp_ns, point, covariance)
        return kalman.state()

    def drop(self, track_id: int) -> None:
        """Forget a track's filter (it ended or is no longer persistent)."""
        self._filters.pop(track_id, None)

    def reset(self) -> None:
        """Forget every filter."""
        self._filters.clear()
        self.outliers = 0
        self.restarts = 0
