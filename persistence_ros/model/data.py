"""Training data: tracks of the simulator's data set (manifest.json + scenes/*.npz)."""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


PLANE_COLUMNS = ('height_m', 'plane_known')
# quantiles of the training rows that bound a feature's range (DomainConfig.feature_ranges)
RANGE_QUANTILES = (0.001, 0.999)


class TrackDataset(Dataset):
    """
    One item per track: a window of up to ``window`` frames (random in training).

    Training windows start at the track start with probability ``start_at_track_start``,
    elsewhere at a random frame; then the first ``burn_in`` frames get no loss (their causal
    context, i.e. the frames before the window, is missing). ``random_windows=False`` gives the
    first ``window`` frames of every track (evaluation: the last valid frame decides).
    Tracks of length 1 are valid.  ``plane_dropout``: in training, the probability that a
    track is shown without its ground plane (``PLANE_COLUMNS`` zeroed: height 0, plane not
    known), as on a robot whose floor is not configured.  ``appearance_jitter``: in training,
    the probability that a track's crops get one photometric change for the whole window
    (``jitter_appearance``), so the visual input does not learn the simulator's look.
    """

    def __init__(self, root, split: Optional[str], geometry_features: Sequence[str],
                 window: int = 32, random_windows: bool = True,
                 start_at_track_start: float = 0.5, burn_in: int = 0, seed: int = 0,
                 plane_dropout: float = 0.0, appearance_jitter: float = 0.0):
        self.root = Path(root)
        self.manifest_path = self.root / 'manifest.json'
        with open(self.manifest_path, 'r', encoding='utf-8') as stream:
            self.manifest = json.load(stream)
        names = list(self.manifest['geometry_features'])
        missing = [f for f in geometry_features if f not in names]
        if missing:
            raise ValueError(f'{self.manifest_path}: geometry features {missing} not in the '
                             f'data set ({names})')
        self.columns = [names.index(f) for f in geometry_features]
        self.features = list(geometry_features)
        self.plane_columns = [k for k, f in enumerate(geometry_features) if f in PLANE_COLUMNS]
        self.plane_dropout = float(plane_dropout)
        self.appearance_jitter = float(appearance_jitter)
        self.window = int(window)
        self.random_windows = random_windows
        self.start_at_track_start = start_at_track_start
        self.burn_in = burn_in
        self.seed = seed
        self.epoch = 0
        self.scenes: List[Dict[str, np.ndarray]] = []
        self.scene_names: List[str] = []
        self.tracks: List[tuple] = []
        for scene in self.manifest['scenes']:
            if split is not None and scene['split'] != split:
                continue
            self.scene_names.append(scene['name'])
            with np.load(self.root / scene['file'], allow_pickle=False) as npz:
                data = {k: npz[k] for k in ('crops', 'geometry', 'frame_label',
                                            'track_offsets', 'track_label', 'track_kind',
                                            'track_camera', 'track_id')}
            data['geometry'] = data['geometry'][:, self.columns].astype(np.float32)
            s = len(self.scenes)
            self.scenes.append(data)
            off = data['track_offsets']
            for i in range(len(off) - 1):
                if off[i + 1] > off[i]:
                    self.tracks.append((s, int(off[i]), int(off[i + 1]),
                                        int(data['track_label'][i]), str(data['track_kind'][i]),
                                        scene['name'], str(data['track_camera'][i]),
                                        int(data['track_id'][i])))

    def set_epoch(self, epoch: int) -> None:
        """Change the random windows (deterministically) for a new epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Return the number of tracks."""
        return len(self.tracks)

    def labels(self) -> np.ndarray:
        """Return the label of every track (1 = persistent)."""
        return np.array([t[3] for t in self.tracks], dtype=np.int64)

    def geometry_stats(self):
        """Return per-column mean and std of the geometry over all frames."""
        geo = np.concatenate([s['geometry'] for s in self.scenes]) if self.scenes else None
        if geo is None or len(geo) == 0:
            n = len(self.columns)
            return np.zeros(n, np.float32), np.ones(n, np.float32)
        return geo.mean(0).astype(np.float32), np.maximum(geo.std(0), 1e-6).astype(np.float32)

    def domain(self) -> Dict[str, object]:
        """
        Return what these tracks cover: ``model.config.DomainConfig`` fields.

        Rig ranges from the manifest's ``rig`` entries of the scenes used (absent in data sets
        built before them: left empty) and the ``RANGE_QUANTILES`` of every geometry column.
        """
        out: Dict[str, object] = {}
        rigs = [scene.get('rig') for scene in self.manifest['scenes']
                if scene['name'] in self.scene_names and scene.get('rig')]
        for key in ('image_width', 'fovy_deg', 'baseline_m', 'fps'):
            values = [float(rig[key]) for rig in rigs if key in rig]
            out[key] = [min(values), max(values)] if values and len(values) == len(rigs) else []
        out['sources'] = sorted({str(rig.get('source', '')) for rig in rigs} - {''})
        geo = np.concatenate([s['geometry'] for s in self.scenes]) if self.scenes else None
        ranges = {}
        if geo is not None and len(geo):
            low, high = np.quantile(geo, RANGE_QUANTILES, axis=0)
            ranges = {name: [float(lo), float(hi)]
                      for name, lo, hi in zip(self.features, low, high)}
        out['feature_ranges'] = ranges
        return out

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        """Return crops uint8 [T, 3, H, W], geometry [T, G], labels [T], loss mask [T], t0."""
        s, a, b, label, _, _, _, _ = self.tracks[i]
        scene = self.scenes[s]
        n = b - a
        start, skip = 0, 0
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.random_windows else None
        if self.random_windows and n > self.window:
            if rng.random() >= self.start_at_track_start:
                start = int(rng.integers(0, n - self.window + 1))
                skip = min(self.burn_in, self.window - 1) if start > 0 else 0
        length = min(n, self.window)
        rows = slice(a + start, a + start + length)
        mask = torch.ones(length, dtype=torch.bool)
        mask[:skip] = False
        geometry = scene['geometry'][rows]
        if self.plane_dropout > 0.0 and self.plane_columns and \
                np.random.default_rng((self.seed, self.epoch, i, 1)).random() < self.plane_dropout:
            geometry = geometry.copy()
            geometry[:, self.plane_columns] = 0.0
        crops = scene['crops'][rows]
        if self.appearance_jitter > 0.0:
            jitter_rng = np.random.default_rng((self.seed, self.epoch, i, 2))
            if jitter_rng.random() < self.appearance_jitter:
                crops = jitter_appearance(crops, jitter_rng)
        return {'crops': torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2))),
                'geometry': torch.from_numpy(geometry),
                'labels': torch.full((length,), float(label)),
                'frame_label': torch.from_numpy(scene['frame_label'][rows].astype(np.float32)),
                'mask': mask, 't0': torch.tensor(start, dtype=torch.long),
                'track_label': torch.tensor(label, dtype=torch.long),
                'index': torch.tensor(i, dtype=torch.long)}


def jitter_appearance(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """
    Return uint8 crops [T, H, W, 3] with one random photometric change for the whole clip.

    Gain with a colour cast, contrast about the clip's mean, gamma, sometimes a blur or
    grey, then sensor noise per frame.  One change per clip keeps what happens over time
    (a glare flash, a reflection fading) while the look of the camera and scene varies.
    """
    x = crops.astype(np.float32) / 255.0
    x = x * (rng.uniform(0.7, 1.3) * rng.uniform(0.9, 1.1, 3)).astype(np.float32)
    mean = x.mean()
    x = mean + (x - mean) * np.float32(rng.uniform(0.7, 1.3))
    x = np.clip(x, 0.0, 1.0) ** np.float32(np.exp(rng.uniform(-0.3, 0.3)))
    if rng.random() < 0.1:
        x = np.repeat(x.mean(axis=3, keepdims=True), 3, axis=3)
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.2)
        x = np.stack([cv2.GaussianBlur(frame, (0, 0), sigma) for frame in x])
    x = x + rng.normal(0.0, rng.uniform(0.0, 8.0) / 255.0, x.shape).astype(np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def collate(items: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Pad windows at the end to the longest one; ``valid`` marks real frames."""
    t = max(item['crops'].shape[0] for item in items)
    out = {}
    for key in ('crops', 'geometry', 'labels', 'frame_label', 'mask'):
        first = items[0][key]
        buf = first.new_zeros((len(items), t) + tuple(first.shape[1:]))
        for j, item in enumerate(items):
            buf[j, :item[key].shape[0]] = item[key]
        out[key] = buf
    valid = torch.zeros(len(items), t, dtype=torch.bool)
    for j, item in enumerate(items):
        valid[j, :item['crops'].shape[0]] = True
    out['valid'] = valid
    out['mask'] = out['mask'] & valid
    out['length'] = valid.sum(1)
    for key in ('t0', 'track_label', 'index'):
        out[key] = torch.stack([item[key] for item in items])
    return out
