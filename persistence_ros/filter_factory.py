"""
Build any persistence filter from ``Settings`` (its ``filter`` and ``model`` sections).

The node, the evaluator, the demo and the benchmarks all call :func:`build_filter`, so a
setting means the same everywhere.  gbdt (scikit-learn) and the learned filter (torch) are
imported only when asked for.
"""

from typing import Optional, Sequence

from persistence_ros.baselines import (
    GroundPlaneFilter, MinHitsFilter, NoFilter, ScoreFilter, StereoConsistencyFilter)
from persistence_ros.overrides import replace_fields
from persistence_ros.settings import FILTER_NAMES, Settings
from persistence_ros.stereo_track import PersistenceFilter


def build_filter(settings: Settings, ensemble: Optional[Sequence[str]] = None
                 ) -> PersistenceFilter:
    """
    Return the filter named by ``settings.filter.name``, configured by ``settings``.

    ``ensemble``: several checkpoints for the learned filter instead of ``model.path`` and
    ``model.ensemble_paths`` (p is the mean of the members' p).

    Raises ValueError saying what to set when a filter lacks an input (``ground_plane``
    without a plane, ``gbdt`` without a training file), FileNotFoundError for missing
    weights.
    """
    fs = settings.filter
    name = fs.name
    if name == 'none':
        return NoFilter()
    if name == 'min_hits':
        return MinHitsFilter(min_hits=fs.min_hits)
    if name == 'score':
        return ScoreFilter(decide_after=fs.decide_after, threshold=fs.threshold)
    if name == 'stereo':
        return StereoConsistencyFilter(decide_after=fs.decide_after,
                                       max_residual_px=fs.max_residual_px)
    if name == 'ground_plane':
        if fs.plane is None:
            raise ValueError('ground_plane filter needs a plane: set filter.ground_plane to '
                             '[a, b, c, d] in the left optical frame (n.X + d = 0, n up)')
        return GroundPlaneFilter(fs.plane, margin_m=fs.ground_margin_m,
                                 decide_after=fs.decide_after)
    if name == 'gbdt':
        if not fs.gbdt_path:
            raise ValueError('gbdt filter needs training data: set filter.gbdt_path to a file '
                             'written by GbdtFilter.save (or fit one on training bags)')
        from persistence_ros.gbdt import GbdtFilter
        return GbdtFilter.load(fs.gbdt_path, plane=fs.plane)
    if name == 'learned':
        from persistence_ros.model.persistence_filter import load_persistence_filter
        ms = settings.model
        if ensemble:
            paths = list(ensemble)
        elif ms.ensemble_paths:
            from persistence_ros.model import DEFAULT_WEIGHTS
            paths = [ms.path or str(DEFAULT_WEIGHTS)] + list(ms.ensemble_paths)
        else:
            paths = ms.path or None
        fallback = build_filter(replace_fields(settings, {'filter.name': ms.fallback}))
        return load_persistence_filter(paths, device=ms.device, plane=fs.plane,
                                       attention=ms.attention, decision=ms.decision,
                                       fallback=fallback, catch_up_frames=ms.catch_up_frames)
    raise ValueError(f'unknown filter {name!r}; choose one of {FILTER_NAMES}')
