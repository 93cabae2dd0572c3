"""
One scene directory on disk: a rosbag2 (MCAP) with both cameras' topics plus ``truth.json``.

Shared by every scene source (the MuJoCo simulator in ``simulation.generate`` and the
photo compositor in ``persistence_ros.composite``) so that the evaluator and the data-set
builder read one format. Pure Python: no MuJoCo, no rclpy.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional

from persistence_ros import bag_io
from persistence_ros.calibration import CameraCalibration
from persistence_ros.offline_runner import TOPICS

FRAME_IDS = {'left': 'stereo_left_optical', 'right': 'stereo_right_optical'}
TRUTH_FILE = 'truth.json'
SOURCES_FILE = 'sources.json'
BAG_METADATA_FILE = 'metadata.yaml'
SCHEMA_VERSION = 1
CAMERAS = ('left', 'right')

__all__ = ['BAG_METADATA_FILE', 'check_scene_folders', 'FRAME_IDS', 'remove_scene_files',
           'round_list', 'scene_files', 'SceneWriter', 'SCHEMA_VERSION', 'SOURCES_FILE',
           'TOPICS', 'TRUTH_FILE']


def round_list(values, digits: int = 3) -> List[float]:
    """Return ``values`` as a list of floats rounded to ``digits`` (the JSON of truth files)."""
    return [round(float(v), digits) for v in values]


def _is_scene_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink() and (
        path.name in (TRUTH_FILE, SOURCES_FILE, BAG_METADATA_FILE) or path.suffix == '.mcap')


def scene_files(out_dir) -> List[Path]:
    """
    Return the files of an existing scene directory this package wrote, to be replaced.

    An absent or empty directory gives ``[]``. Anything else that is not a scene written by
    this package (``truth.json`` with only ``sources.json``, the bag's ``metadata.yaml`` and
    ``*.mcap`` files beside it) raises ``FileExistsError``: it is never deleted.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise FileExistsError(f'{out_dir} exists and is not a scene directory (a file or a '
                              'link); not replacing it')
    if not out_dir.exists():
        return []
    entries = sorted(out_dir.iterdir())
    others = [e.name for e in entries if not _is_scene_file(e)]
    if entries and (others or not (out_dir / TRUTH_FILE).is_file()):
        why = f'it holds {others[:3]}' if others else f'it has no {TRUTH_FILE}'
        raise FileExistsError(f'{out_dir} is not empty and not a scene written by '
                              f'persistence_ros ({why}); not deleting it')
    return entries


def check_scene_folders(directories: List[Path], overwrite: bool) -> None:
    """
    Raise before anything is written if two scenes share a folder or one would be refused.

    ``ValueError`` for a folder named twice; ``FileExistsError`` for a non-empty folder
    without ``overwrite`` (and for anything that is not a scene, ``scene_files``).
    """
    directories = [Path(d) for d in directories]
    twice = sorted({str(d) for d in directories if directories.count(d) > 1})
    if twice:
        raise ValueError(f'two scenes would be written into the same folder: {twice} (give '
                         'the scenario or preset files different names)')
    for directory in directories:
        if scene_files(directory) and not overwrite:
            raise FileExistsError(f'{directory} exists and is not empty (use --overwrite)')


def remove_scene_files(out_dir: Path, files: Optional[List[Path]] = None) -> None:
    """
    Delete ``files`` (default: every scene file in ``out_dir``), then ``out_dir`` if empty.

    Only files ``scene_files`` accepts are ever passed here; a folder left non-empty stays.
    """
    out_dir = Path(out_dir)
    if files is None:
        files = [p for p in out_dir.iterdir() if _is_scene_file(p)] if out_dir.is_dir() else []
    for path in files:
        path.unlink()
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()


class SceneWriter:
    """
    Write one scene: per camera and frame the image, CameraInfo and detections, then the truth.

    Use as a context manager. ``write_camera`` gives the detections of one camera's frame
    their ids (``L{frame:06d}-{k:02d}`` / ``R...``, sorted by box centre so an id carries no
    kind) and records them for ``truth.json``; ``finish(truth)`` writes ``truth.json`` (with
    the recorded ``detections``) and ``sources.json``. An existing scene directory is replaced
    only with ``overwrite`` (``scene_files``); an exception inside the block removes the partial
    scene this writer wrote.
    """

    def __init__(self, out_dir, calibrations: Dict[str, CameraCalibration],
                 overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.calibrations = calibrations
        self.overwrite = overwrite
        self.detections: Dict[str, dict] = {}
        self.sources: Dict[str, str] = {}
        self._bag: Optional[bag_io.BagWriter] = None

    def __enter__(self) -> 'SceneWriter':
        files = scene_files(self.out_dir)
        if files and not self.overwrite:
            raise FileExistsError(f'{self.out_dir} exists and is not empty (use overwrite)')
        if self.out_dir.exists():
            remove_scene_files(self.out_dir, files)
        self._bag = bag_io.BagWriter(self.out_dir)
        self._bag.__enter__()
        for cam in CAMERAS:
            self._bag.add_topic(TOPICS[cam]['image'], bag_io.IMAGE)
            self._bag.add_topic(TOPICS[cam]['info'], bag_io.CAMERA_INFO)
            self._bag.add_topic(TOPICS[cam]['detections'], bag_io.DETECTION_2D_ARRAY)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._bag is not None:
            self._bag.__exit__(exc_type, exc, tb)
            self._bag = None
        if exc_type is not None and self.out_dir.is_dir():
            try:
                remove_scene_files(self.out_dir)
            except OSError:
                pass

    def write_camera(self, camera: str, frame: int, stamp_ns: int, rgb,
                     detections: List[dict]) -> List[dict]:
        """
        Write one camera's frame; return the detections with their ids.

        Each detection is a dict with ``box`` ([cx, cy, w, h] px), ``score``, ``kind``,
        ``object_id`` and ``source`` (one id per ground-truth 2D track, for ``sources.json``).
        """
        dets = [dict(d, box=round_list(d['box']), score=round(float(d['score']), 4))
                for d in detections]
        dets.sort(key=lambda d: (d['box'][0], d['box'][1]))
        prefix = camera[0].upper()
        for k, det in enumerate(dets):
            det['id'] = f'{prefix}{frame:06d}-{k:02d}'
            self.detections[det['id']] = {
                'camera': camera, 'frame': int(frame), 'stamp_ns': int(stamp_ns),
                'kind': det['kind'], 'object_id': det['object_id'], 'box': det['box']}
            self.sources[det['id']] = det.get('source') or f'blob:{det["id"]}'
        frame_id = FRAME_IDS[camera]
        self._bag.write(TOPICS[camera]['image'], stamp_ns,
                        bag_io.image_msg(rgb, stamp_ns, frame_id))
        self._bag.write(TOPICS[camera]['info'], stamp_ns,
                        bag_io.camera_info_msg(self.calibrations[camera], stamp_ns, frame_id))
        self._bag.write(TOPICS[camera]['detections'], stamp_ns,
                        bag_io.detection_array_msg(dets, stamp_ns, frame_id))
        return dets

    def finish(self, truth: dict) -> dict:
        """Write ``truth.json`` (``truth['detections']`` = the recorded ones) and sources."""
        truth['detections'] = self.detections
        (self.out_dir / TRUTH_FILE).write_text(json.dumps(truth, indent=1) + '\n')
        (self.out_dir / SOURCES_FILE).write_text(
            json.dumps(self.sources, indent=0, sort_keys=True) + '\n')
        return truth
