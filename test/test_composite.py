"""The photo compositor (second scene source): real plates, geometry, truth, format, speed-free."""

import json
import os
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest

from persistence_ros.composite.generate import generate_composite_scene
from persistence_ros.composite.plates import load_plate
from persistence_ros.composite.presets import list_presets, load_preset, validate_preset
from persistence_ros.composite.render import Compositor
from persistence_ros.composite.scene import build_scene
from persistence_ros.simulation.detector import mask_box
from persistence_ros.simulation.scenario import ScenarioError
from persistence_ros.stereo import TriangulationConfig, Triangulator

COMMAND = Path(sys.executable).with_name('persistence-ros')
SMALL = {'duration_s': 1.0, 'fps': [12.0, 12.0], 'rig': {'width': [320, 320]}}


def _preset(name: str, seed: int, **extra) -> dict:
    overrides = dict(SMALL)
    overrides.update(extra)
    return load_preset(name, seed=seed, overrides=overrides)


def _spheres(plate: str, seed: int, **extra) -> dict:
    """Return a preset of static spheres on one plate, without detector noise."""
    raw = {'seed': seed, 'duration_s': 1.0, 'fps': [10.0, 10.0],
           'rig': {'plates': [plate], 'width': [480, 480], 'noise_std': [0.0, 0.0]},
           'objects': {'count': [4, 4], 'shapes': ['sphere'], 'motions': ['static'],
                       'size': [0.008, 0.012]},
           'detector': {'jitter': 0.0, 'miss_prob': 0.0}}
    raw.update(extra)
    return validate_preset(raw)


@pytest.fixture(scope='module')
def window_scene(tmp_path_factory):
    """Return (scene_dir, truth) of a small composite_window scene."""
    out = tmp_path_factory.mktemp('composite') / 'composite_window-s0004'
    preset = _preset('composite_window', 4, duration_s=2.0,
                     objects={'count': [3, 3], 'motions': ['linear', 'curved']})
    return out, generate_composite_scene(preset, out)


def test_presets_load_and_bad_keys_are_named():
    names = list_presets()
    for required in ('composite_clean', 'composite_window', 'composite_glare',
                     'composite_mixed_hard'):
        assert required in names
        assert load_preset(required)['name'] == required
    assert load_preset('composite_window')['window']['enabled'] is True
    with pytest.raises(ScenarioError, match='detector.mis_prob'):
        validate_preset({'detector': {'mis_prob': 0.1}})
    with pytest.raises(ScenarioError, match='detector.scores.reflectoin'):
        validate_preset({'detector': {'scores': {'reflectoin': [1.0, 1.0]}}})
    with pytest.raises(ScenarioError, match='rig.plates'):
        validate_preset({'rig': {'plates': ['kitti']}})
    with pytest.raises(ScenarioError, match='objects.speed'):
        validate_preset({'objects': {'speed': [2.0, 1.0]}})


@pytest.mark.parametrize('name', ['motorcycle', 'aloe'])
def test_ground_truth_disparity_explains_the_real_pair(name):
    # the right image resampled at x - d reproduces the left one: the plate's rig and depth
    # are the photographs' own (and x_R = x_L - d is the convention used)
    plate = load_plate(name)
    k_l, k_r = plate.left.calibration.P, plate.right.calibration.P
    focal_b = -k_r[0, 3]
    doffs = k_r[0, 2] - k_l[0, 2]
    disparity = (focal_b / plate.left.depth - doffs).astype(np.float32)
    height, width = disparity.shape
    xs = np.arange(width, dtype=np.float32)[None, :] - disparity
    ys = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    left = plate.left.image.astype(np.float32)
    warped = cv2.remap(plate.right.image.astype(np.float32), xs, ys, cv2.INTER_LINEAR)
    inside = (xs > 1) & (xs < width - 2)
    error_gt = np.abs(warped - left).mean(axis=2)[inside].mean()
    shifted = np.abs(np.roll(plate.right.image, int(np.median(disparity)), axis=1)
                     .astype(np.float32) - left).mean(axis=2)[inside].mean()
    assert error_gt < 0.5 * shifted, (error_gt, shifted)


def test_distorted_chessboard_rig_is_calibrated_from_the_real_pairs():
    plate = load_plate('chess03')
    stereo = plate.stereo
    assert np.any(plate.left.calibration.D) and not plate.left.calibration.is_rectified
    assert stereo.is_rectified  # the CameraInfo P of both cameras share rows
    assert 0.05 < plate.baseline_m < 0.15
    # chessboard corners of the real images triangulate onto a plane (the board)
    grey = [cv2.cvtColor(v.image, cv2.COLOR_RGB2GRAY) for v in (plate.left, plate.right)]
    found = [cv2.findChessboardCorners(g, (9, 6)) for g in grey]
    assert all(ok for ok, _ in found)
    points = Triangulator(stereo, TriangulationConfig(max_depth_sigma_m=float('inf'))
                          ).triangulate(found[0][1].reshape(-1, 2),
                                        found[1][1].reshape(-1, 2)).points_optical
    centred = points - points.mean(axis=0)
    flatness = np.linalg.svd(centred, compute_uv=False)
    assert flatness[2] < 0.02 * flatness[0]
    # neighbouring corners are one 25 mm square apart (the scale the rig was given)
    steps = np.linalg.norm(np.diff(points.reshape(6, 9, 3), axis=1), axis=2)
    assert abs(np.median(steps) - 0.025) < 0.002


def _owned_box(frame, index):
    return mask_box(frame.mask(index))


def test_truth_boxes_are_the_drawn_pixels():
    scene = build_scene(_spheres('motorcycle', 2, objects={
        'count': [1, 1], 'shapes': ['box'], 'motions': ['static'], 'size': [0.03, 0.03],
        'textured': 0.0}))
    rendered = Compositor(scene).render(0, sensor=False)
    for cam in ('left', 'right'):
        shot = rendered[cam]
        [index] = [i for i, e in enumerate(shot.elements) if e.kind == 'object']
        changed = np.abs(shot.clean - Compositor(scene).base[cam]).max(axis=2) > 0.5
        ys, xs = np.nonzero(changed)
        cx, cy, w, h = _owned_box(shot, index)
        # the owned pixels (coverage >= 0.5) lie inside the changed ones (any coverage), and
        # only antialiased edge pixels differ: at most one pixel per side
        assert xs.min() <= cx - w / 2 + 0.5 <= xs.min() + 1
        assert xs.max() - 1 <= cx + w / 2 - 0.5 <= xs.max()
        assert ys.min() <= cy - h / 2 + 0.5 <= ys.min() + 1
        assert ys.max() - 1 <= cy + h / 2 - 0.5 <= ys.max()


def _whole_box(shot, index):
    """Return the box of an element nothing hides and the image border does not cut, or None."""
    element = shot.elements[index]
    mask = shot.mask(index)
    if mask.sum() < max(0.98 * element.full_px, 30):
        return None
    cx, cy, w, h = mask_box(mask)
    height, width = mask.shape
    if cx - w / 2 < 2 or cy - h / 2 < 2 or cx + w / 2 > width - 3 or cy + h / 2 > height - 3:
        return None
    return cx, cy


@pytest.mark.parametrize('plate, seed', [('motorcycle', 7), ('aloe', 3), ('chess06', 5)])
def test_a_composited_object_triangulates_to_its_truth(plate, seed):
    scene = build_scene(_spheres(plate, seed))
    rendered = Compositor(scene).render(0, sensor=False)
    triangulator = Triangulator(scene.plate.stereo,
                                TriangulationConfig(max_depth_sigma_m=float('inf')))
    checked = 0
    for body in scene.bodies:
        boxes = {}
        for cam, shot in rendered.items():
            found = [i for i, e in enumerate(shot.elements) if e.source == body.id]
            centre = _whole_box(shot, found[0]) if found else None
            if centre is not None:
                boxes[cam] = centre
        if len(boxes) < 2:
            continue
        result = triangulator.triangulate(np.array([boxes['left']]), np.array([boxes['right']]))
        truth = body.positions[0]
        depth = truth[2]
        focal = scene.plate.left.calibration.P[0, 0]
        # disparity quantization: a box centre is good to about a pixel in each view
        depth_tolerance = 2.0 * depth ** 2 / (focal * scene.plate.baseline_m) + 0.01 * depth
        lateral_tolerance = 2.0 * depth / focal
        error = result.points_optical[0] - truth
        assert abs(error[2]) < depth_tolerance, (plate, body.id, error, depth_tolerance)
        assert np.hypot(error[0], error[1]) < lateral_tolerance + 0.01 * depth, (plate, error)
        checked += 1
    assert checked >= 1


def test_a_reflection_triangulates_behind_the_pane_at_the_mirror_image():
    checked = 0
    for seed in range(11, 16):
        scene = build_scene(_spheres('motorcycle', seed, window={
            'enabled': True, 'reflectance': [0.6, 0.6], 'yaw_deg': [25.0, 25.0],
            'coverage': [2.0, 2.0]}))
        rendered = Compositor(scene).render(0, sensor=False)
        triangulator = Triangulator(scene.plate.stereo,
                                    TriangulationConfig(max_depth_sigma_m=float('inf')))
        for body in scene.bodies:
            centres = {}
            for cam, shot in rendered.items():
                found = [i for i, e in enumerate(shot.elements) if e.source == f'refl:{body.id}']
                if found:
                    centres[cam] = _whole_box(shot, found[0])
            if len(centres) < 2 or None in centres.values():
                continue
            point = triangulator.triangulate(np.array([centres['left']]),
                                             np.array([centres['right']])).points_optical[0]
            assert scene.pane.signed_distance(point) < 0.0  # behind the glass
            mirror = scene.pane.reflect(body.positions[0])
            depth = mirror[2]
            tolerance = 2.0 * depth ** 2 / (scene.plate.left.calibration.P[0, 0]
                                            * scene.plate.baseline_m) + 0.02 * depth
            assert np.linalg.norm(point - mirror) < tolerance, (point, mirror, tolerance)
            checked += 1
    assert checked >= 1


def test_the_photographs_foreground_hides_an_object_behind_it():
    scene = build_scene(_spheres('motorcycle', 2, objects={
        'count': [1, 1], 'shapes': ['sphere'], 'motions': ['static'], 'size': [0.04, 0.04]}))
    left = scene.plate.left
    body = scene.bodies[0]
    # put the sphere on the ray of a pixel at the edge of a near surface, behind that surface
    depth = left.depth
    near = depth < np.percentile(depth, 20)
    edge = near & ~cv2.erode(near.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    rows, cols = np.nonzero(edge[40:-40, 40:-40])
    row, col = rows[len(rows) // 2] + 40, cols[len(cols) // 2] + 40
    k = left.calibration.K
    z = float(depth[row, col]) + 3.0 * body.radius
    body.positions[:] = np.array([(col - k[0, 2]) / k[0, 0] * z, (row - k[1, 2]) / k[1, 1] * z,
                                  z])
    shot = Compositor(scene).render(0, sensor=False)['left']
    [index] = [i for i, e in enumerate(shot.elements) if e.kind == 'object']
    element = shot.elements[index]
    assert 0 < element.drawn_px < 0.9 * element.full_px
    front = z - body.radius
    assert np.all(depth[shot.mask(index)] > front)  # drawn only where the photo is farther


def test_the_seed_decides_everything(tmp_path):
    preset = _preset('composite_mixed_hard', 21, duration_s=0.25)
    first = generate_composite_scene(preset, tmp_path / 'a')
    second = generate_composite_scene(preset, tmp_path / 'b')
    assert (tmp_path / 'a' / 'truth.json').read_bytes() == \
        (tmp_path / 'b' / 'truth.json').read_bytes()
    from persistence_ros import bag_io
    images = [[msg.data.tobytes() for _, _, msg in bag_io.read_messages(
        tmp_path / d, ['/stereo/left/image_raw'])] for d in ('a', 'b')]
    assert images[0] == images[1] and len(images[0]) == len(first['frames'])
    other = generate_composite_scene(_preset('composite_mixed_hard', 22, duration_s=0.25),
                                     tmp_path / 'c')
    assert other['detections'] != second['detections']


def test_a_scene_has_the_simulator_format_and_transients(window_scene):
    scene_dir, truth = window_scene
    assert truth['source'] == 'composite'
    assert 'ground_plane_left_optical' not in truth['rig']  # no floor is defined
    kinds = {d['kind'] for d in truth['detections'].values()}
    assert {'object', 'reflection'} <= kinds
    reflections = [d for d in truth['detections'].values() if d['kind'] == 'reflection']
    assert all(d['object_id'] in truth['objects'] for d in reflections)
    assert set(truth['gt_boxes']) == {'left', 'right'}
    assert len(truth['gt_boxes']['left']) == len(truth['frames'])
    from persistence_ros.offline_runner import read_stereo_bag
    calibration, frames = read_stereo_bag(scene_dir, with_images=True)
    assert len(frames) == len(truth['frames'])
    assert frames[0].left_image.shape == (truth['rig']['left']['image_height'],
                                          truth['rig']['left']['image_width'], 3)
    assert abs(calibration.baseline_m - truth['rig']['baseline_m']) < 1e-6


def test_the_evaluator_scores_a_composite_scene(window_scene, tmp_path):
    scene_dir, _ = window_scene
    out = tmp_path / 'metrics.json'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([str(COMMAND), 'evaluate', '--bag', str(scene_dir), '--filter',
                             'none', '--json', str(out)], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr
    tracks = json.loads(out.read_text())['tracks']
    assert tracks['tp'] >= 1 and tracks['fp'] >= 1  # real tracks and reflection tracks
    assert tracks['recall'] == 1.0 and tracks['f1'] < 1.0


def test_a_composite_scene_goes_through_the_data_set_builder(window_scene):
    from persistence_ros.simulation.dataset import scene_arrays
    scene_dir, _ = window_scene
    arrays = scene_arrays(scene_dir, crop_size=32)
    assert set(arrays['track_label'].tolist()) == {0, 1}
    assert 'reflection' in set(arrays['track_kind'].tolist())
    assert arrays['crops'].shape[1:] == (32, 32, 3)
    assert arrays['track_offsets'][-1] == len(arrays['crops']) == len(arrays['geometry'])


def test_the_command_writes_scenes_and_refuses_to_overwrite(tmp_path):
    args = [str(COMMAND), 'composite', '--preset', 'composite_clean', '--seed', '3',
            '--duration', '0.3', '--fps', '10', '--width', '320', '--quiet',
            '--out', str(tmp_path / 'one')]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    truth = json.loads((tmp_path / 'one' / 'truth.json').read_text())
    assert truth['fps'] == 10.0 and truth['rig']['left']['image_width'] == 320
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and 'exists' in again.stderr
    bad = subprocess.run(args[:3] + ['composite_nope'] + args[4:], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and 'composite_clean' in bad.stderr
