"""Randomized scenes: rig draws, lens distortion, looks, held-out rigs, the in-memory data set."""

import hashlib
import json
import math
from pathlib import Path
import re

import cv2
import numpy as np
import pytest

from persistence_ros.simulation import dataset as ds
from persistence_ros.simulation import randomize
from persistence_ros.simulation.generate import (calibrations, generate_scene, simulated_scene,
                                                 SOURCES_FILE, TRUTH_FILE)
from persistence_ros.simulation.looks import Lens
from persistence_ros.simulation.scenario import load_scenario, ScenarioError, validate_scenario
from persistence_ros.simulation.scene import build_scene, make_mjcf, SceneRenderer

PRESETS = ('clean', 'cluttered', 'glare', 'mixed_hard', 'noisy', 'reflective_floor', 'window')
# Recorded with the code before randomized scenes existed (main 26cdaf4, 2026-12-07): the
# scene layout + MJCF of each preset (seed 5), a fingerprint of this machine's renderer, and
# digests of a 6-frame scene of each preset (truth.json without the package version,
# sources.json, every bag message's topic, stamp and CDR bytes).
LAYOUT_DIGESTS = {
    'clean': '2cc8dacf0ddc9b46f9ba', 'cluttered': '37097acc2408e0d90d28',
    'glare': '463c722f4295e80c79c4', 'mixed_hard': '79b681b6afa6a18ebe27',
    'noisy': 'd9ec09b88b591766954c', 'reflective_floor': 'af096fc4a794ce1dd6a7',
    'window': 'e858082a384c0934d6e3'}
RENDERER_DIGEST = 'bfa9293c8ccefbf6b833'
SCENE_DIGESTS = {
    'clean': 'bf6740d396a5d279884c', 'cluttered': '643a65d0cdb39e363235',
    'glare': '11e965059795a8faa08e', 'mixed_hard': 'a4bc57343679c4b1faef',
    'noisy': '17453947226673faa281', 'reflective_floor': '5b0293455dde7fd2d631',
    'window': '323ec4589d9fe7bf9e24'}

# a tiny randomized scenario: every section drawn, at sizes a test can render
TINY_RANDOM = {
    'name': 'tiny_random',
    'randomize': {
        'rig': {'enabled': True, 'width_px': [144, 192], 'fps': [8.0, 10.0],
                'distortion_prob': 1.0},
        'content': {'enabled': True, 'duration_s': [0.8, 1.0], 'objects': [2, 3]},
        'looks': {'enabled': True, 'blur_prob': 1.0, 'jpeg_prob': 1.0},
        'detector': {'enabled': True},
    },
}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:20]


def _scene_digest(scene_dir: Path) -> str:
    from rosbags.highlevel import AnyReader
    truth = (scene_dir / TRUTH_FILE).read_text()
    parts = [re.sub(r'"package_version": "[^"]*"', '', truth).encode(),
             (scene_dir / SOURCES_FILE).read_bytes()]
    with AnyReader([scene_dir]) as reader:
        for connection, stamp, raw in reader.messages():
            parts += [connection.topic.encode(), str(stamp).encode(), bytes(raw)]
    return _digest(*parts)


def test_presets_are_unchanged_bit_for_bit(tmp_path):
    for name in PRESETS:
        spec = build_scene(load_scenario(name, seed=5))
        layout = _digest(make_mjcf(spec).encode(), *(np.ascontiguousarray(
            o.positions, dtype=np.float64).tobytes() for o in spec.objects))
        assert layout == LAYOUT_DIGESTS[name], name
    spec = build_scene(load_scenario('clean', seed=5, overrides={'rig': {'width': 64,
                                                                         'height': 48}}))
    renderer = SceneRenderer(spec)
    try:
        fingerprint = _digest(renderer.backgrounds['left'].tobytes())
    finally:
        renderer.close()
    if fingerprint != RENDERER_DIGEST:
        pytest.skip('this renderer (Mesa) draws other pixels than the one the scene digests '
                    'were recorded with; layouts and MJCF were compared')
    for name in PRESETS:
        fps = load_scenario(name)['fps']
        generate_scene(load_scenario(name, seed=5, overrides={'duration_s': 6 / fps}),
                       tmp_path / name)
        assert _scene_digest(tmp_path / name) == SCENE_DIGESTS[name], name


def test_randomize_schema_names_the_bad_key():
    with pytest.raises(ScenarioError, match='randomize.rig.widht_px'):
        validate_scenario({'randomize': {'rig': {'widht_px': [320, 640]}}})
    with pytest.raises(ScenarioError, match="'randomize.rig.fps' must be \\[low, high\\]"):
        validate_scenario({'randomize': {'rig': {'fps': [30.0, 10.0]}}})
    with pytest.raises(ScenarioError, match='randomize.rig.holdout'):
        validate_scenario({'randomize': {'rig': {'holdout': ['no_such_preset']}}})
    with pytest.raises(ScenarioError, match='randomize.looks.textures'):
        validate_scenario({'randomize': {'looks': {'textures': 'everything'}}})
    with pytest.raises(ScenarioError, match='floor.texture'):
        validate_scenario({'floor': {'texture': '/etc/passwd'}})
    with pytest.raises(ScenarioError, match='looks.jpeg_quality'):
        validate_scenario({'looks': {'jpeg_quality': 101}})
    with pytest.raises(ScenarioError, match='rig.distortion'):
        validate_scenario({'rig': {'distortion': [2.0, 0.0, 0.0, 0.0, 0.0]}})
    with pytest.raises(ScenarioError, match='objects.shapes'):
        validate_scenario({'objects': {'shapes': ['person', 'torus']}})


def test_draw_is_deterministic_and_concrete():
    base = validate_scenario(dict(TINY_RANDOM, seed=7))
    first, again = randomize.draw_scenario(base), randomize.draw_scenario(base)
    assert first == again
    assert not randomize.is_randomized(first)
    assert randomize.draw_scenario(first) == first  # drawing a drawn scenario changes nothing
    assert first['rig']['width'] != base['rig']['width']
    assert first['rig']['distortion'][0] != 0.0 and 8.0 <= first['fps'] <= 10.0
    other = randomize.draw_scenario(validate_scenario(dict(TINY_RANDOM, seed=8)))
    assert other['rig'] != first['rig']


def test_training_draws_never_give_a_held_out_rig():
    training = load_scenario('randomized')
    cfg = training['randomize']['rig']
    held = randomize.holdout_rigs(cfg['holdout'])
    assert set(held) == {'heldout_wide', 'heldout_narrow', 'heldout_select'}
    assert held['heldout_wide'] == {'width': 1280, 'height': 720, 'fps': 60.0,
                                    'baseline_m': 0.45}
    # the held-out rigs lie inside the training ranges: only the exclusion keeps them out
    for rig in held.values():
        assert cfg['width_px'][0] <= rig['width'] <= cfg['width_px'][1]
        assert cfg['fps'][0] <= rig['fps'] <= cfg['fps'][1]
        assert cfg['baseline_m'][0] <= rig['baseline_m'] <= cfg['baseline_m'][1]
    near = 0  # the candidates without the exclusion do reach them, so the test can fail
    rng = np.random.default_rng(0)
    for _ in range(40000):
        rig = randomize._rig_candidate(cfg, rng)
        near += any(randomize.near_holdout(rig, h, cfg['holdout_margin'])
                    for h in held.values())
    assert near > 20
    for seed in range(600):
        rig = randomize.rig_key(randomize.draw_scenario(load_scenario('randomized',
                                                                      seed=seed)))
        assert not any(randomize.near_holdout(rig, h, cfg['holdout_margin'])
                       for h in held.values()), (seed, rig)


def test_narrow_lenses_stand_back_and_still_look_at_the_scene():
    telephoto, wide = load_scenario('randomized_telephoto'), load_scenario('randomized')
    cfg = telephoto['randomize']['rig']
    assert cfg['fovy_deg'] == [10.0, 40.0]
    # the two files stay one distribution but for the lens (no copy drifting apart)
    cfg_wide = wide['randomize']['rig']
    assert {k: v for k, v in cfg.items() if k != 'fovy_deg'} == {
        k: v for k, v in cfg_wide.items() if k != 'fovy_deg'}
    assert dict(telephoto, name='', randomize=None) == dict(wide, name='', randomize=None)
    assert {k: v for k, v in telephoto['randomize'].items() if k != 'rig'} == {
        k: v for k, v in wide['randomize'].items() if k != 'rig'}
    assert randomize.step_back(cfg, 60.0) == randomize.step_back(cfg, 40.0) == 1.0
    assert randomize.step_back(cfg, 20.0) == pytest.approx(
        math.tan(math.radians(20.0)) / math.tan(math.radians(10.0)))
    assert randomize.step_back(cfg, 2.0) == cfg['max_step_back']
    for key, value in (('max_step_back', 20.0), ('step_back_fovy_deg', 180.0)):
        with pytest.raises(ScenarioError, match=f'randomize.rig.{key}'):
            validate_scenario({'randomize': {'rig': {key: value}}})
    widths = []
    for seed in range(40):
        rig = randomize.draw_scenario(load_scenario('randomized_telephoto', seed=seed))['rig']
        assert 10.0 <= rig['fovy_deg'] <= 40.0
        position, look_at = np.array(rig['position']), np.array(rig['look_at'])
        forward = (look_at - position) / np.linalg.norm(look_at - position)
        # where the optical axis crosses y = 2 m (the middle of the objects' region)
        t = (2.0 - position[1]) / forward[1]
        assert t > 0 and -0.5 <= (position + t * forward)[2] <= 2.5, (seed, rig)
        # the view's half height there: a lens of 40 degrees frames 0.4-1.6 m from its
        # drawn distance (1-2.5 m in front of the region, aimed 2.5-4.5 m ahead)
        widths.append(t * math.tan(math.radians(0.5 * rig['fovy_deg'])))
    assert 0.25 <= min(widths) and max(widths) <= 2.5, widths


def _distorted_spheres(corner: float = -0.15) -> dict:
    width, height, fovy = 256, 192, 80.0
    k1 = corner / randomize.corner_radius(width, height, fovy) ** 2
    return validate_scenario({
        'seed': 4, 'duration_s': 1.0, 'fps': 6.0,
        'rig': {'width': width, 'height': height, 'fovy_deg': fovy,
                'distortion': [k1, 0.0, 0.0004, -0.0003, 0.0]},
        'objects': {'count': 8, 'shapes': ['sphere'], 'trajectories': ['circular'],
                    'size_range_m': [0.04, 0.06], 'region_min': [-2.0, 0.8, 0.2],
                    'region_max': [2.0, 2.5, 1.6]}})


def test_camera_info_matches_the_distorted_render():
    """Truth points projected with CameraInfo (K, D, P) land on their rendered pixels."""
    spec = build_scene(_distorted_spheres())
    renderer = SceneRenderer(spec)
    calib = calibrations(renderer)
    errors, pinhole_errors, rectified_errors = [], [], []
    try:
        assert renderer.lens.pad[0] > 5  # a barrel lens sees more than the pinhole image
        for frame in range(spec.n_frames):
            rendered = renderer.render(frame)
            for cam in ('left', 'right'):
                info = calib[cam]
                assert np.array_equal(info.D, spec.scenario['rig']['distortion'])
                for obj in spec.objects:
                    ys, xs = np.nonzero(rendered.geom_ids[cam] == renderer.geom_ids[obj.id])
                    if len(xs) < 15 or xs.min() == 0 or ys.min() == 0 \
                            or xs.max() == info.width - 1 or ys.max() == info.height - 1:
                        continue  # not fully in view
                    centroid = np.array([xs.mean(), ys.mean()])
                    # the CameraInfo's own projection: optical point -> K, D
                    optical = renderer.world_to_optical(obj.positions[frame], cam)[0]
                    pixel, _ = cv2.projectPoints(optical[None], np.zeros(3), np.zeros(3),
                                                 info.K, info.D)
                    errors.append(np.hypot(*(pixel.reshape(2) - centroid)))
                    pinhole = info.K @ (optical / optical[2])
                    pinhole_errors.append(np.hypot(*(pinhole[:2] - centroid)))
                    # the pipeline's undistortion of the seen pixel gives the P projection
                    # (P = K [I | t]: the right camera's point seen from the left frame)
                    left = renderer.world_to_optical(obj.positions[frame], 'left')[0]
                    projected = info.P @ np.append(left, 1.0)
                    rectified = info.rectify_points(centroid[None])[0]
                    rectified_errors.append(np.hypot(*(projected[:2] / projected[2]
                                                       - rectified)))
    finally:
        renderer.close()
    assert len(errors) >= 10
    assert max(errors) < 1.0 and max(rectified_errors) < 1.0
    assert max(pinhole_errors) > 2.0  # ignoring D would be visibly wrong


def test_detections_of_a_distorted_rig_sit_on_the_projected_truth():
    """The detector's boxes (raw, distorted pixels) centre on truth projected with K and D."""
    scenario = _distorted_spheres()
    scenario['detector'].update(jitter_px=0.0, miss_prob=0.0)
    with simulated_scene(scenario) as sim:
        for _ in sim.frames():
            pass
        truth = sim.truth
    calib = {cam: truth['rig'][cam] for cam in ('left', 'right')}
    baseline = truth['rig']['baseline_m']
    errors = []
    for det in truth['detections'].values():
        if det['kind'] != 'object':
            continue
        info = calib[det['camera']]
        K = np.reshape(info['camera_matrix']['data'], (3, 3))
        D = np.asarray(info['distortion_coefficients']['data'])
        point = np.asarray(truth['objects'][det['object_id']]['states'][det['frame']]
                           ['left_optical'])
        if det['camera'] == 'right':
            point = point - [baseline, 0.0, 0.0]
        pixel, _ = cv2.projectPoints(point[None], np.zeros(3), np.zeros(3), K, D)
        cx, cy, w, h = det['box']
        if min(cx - w / 2, cy - h / 2) < 1 or cx + w / 2 > info['image_width'] - 2 \
                or cy + h / 2 > info['image_height'] - 2:
            continue  # cut by the image border
        errors.append(np.hypot(*(pixel.reshape(2) - (cx, cy))))
    assert len(errors) >= 10
    # boxes of partly hidden or merged blobs are off; most sit on the projection
    assert np.median(errors) < 0.75 and np.percentile(errors, 90) < 1.5


def test_distortion_round_trip():
    lens = Lens(np.array([[200.0, 0, 127.5], [0, 200.0, 95.5], [0, 0, 1]]),
                [-0.12, 0.01, 0.0005, -0.0004, 0.0], 256, 192)
    from persistence_ros.calibration import CameraCalibration
    camera = CameraCalibration(256, 192, lens.K, lens.D)
    rng = np.random.default_rng(1)
    optical = np.column_stack([rng.uniform(-0.6, 0.6, 200), rng.uniform(-0.45, 0.45, 200),
                               np.ones(200)])
    distorted = lens.distort_points(optical)
    back = camera.rectify_points(distorted)
    assert np.abs(back - (optical[:, :2] * 200.0 + [127.5, 95.5])).max() < 1e-3
    # image level: distort a smooth pinhole canvas, undistort with OpenCV, get it back
    width, height = lens.canvas
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    canvas = np.stack([127 + 100 * np.sin(xs / 9.0), 127 + 100 * np.cos(ys / 7.0),
                       127 + 60 * np.sin((xs + ys) / 13.0)], axis=2).astype(np.uint8)
    image = lens.rgb(canvas)
    undistorted = cv2.undistort(image, lens.K, lens.D)
    pad_x, pad_y = lens.pad
    pinhole = canvas[pad_y:pad_y + 192, pad_x:pad_x + 256]
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(undistorted[inner].astype(int) - pinhole[inner]).mean() < 2.0
    assert np.abs(image[inner].astype(int) - pinhole[inner]).mean() > 5.0


def test_looks_change_images_but_not_truth(tmp_path):
    plain = load_scenario('window', seed=3, overrides={
        'duration_s': 0.6, 'fps': 10.0, 'rig': {'width': 160, 'height': 120}})
    looks = {'exposure': 1.4, 'gamma': 0.8, 'white_balance': [1.2, 1.0, 0.8],
             'vignetting': 0.3, 'bloom': 0.5, 'noise_std': 3.0, 'shot_noise': 0.2,
             'blur_subframes': 3, 'shutter': 0.8, 'jpeg_quality': 40}
    detector = dict(plain['detector'], smooth_px=1.5, threshold=14)
    looked = validate_scenario(dict(plain, looks=looks, detector=detector))
    with simulated_scene(plain) as a, simulated_scene(looked) as b:
        frames_a, frames_b = list(a.frames()), list(b.frames())
        differences = [np.abs(fa.images[c].astype(int) - fb.images[c]).mean()
                       for fa, fb in zip(frames_a, frames_b) for c in ('left', 'right')]
        assert min(differences) > 5.0
        assert a.truth['gt_boxes'] == b.truth['gt_boxes']
        assert a.truth['objects'] == b.truth['objects']
        assert a.truth['rig'] == b.truth['rig']
        assert any(d['kind'] == 'object' for d in b.truth['detections'].values())


def test_randomized_scene_is_reproducible_by_seed(tmp_path):
    scenario = validate_scenario(dict(TINY_RANDOM, seed=21))
    truth = generate_scene(scenario, tmp_path / 'a')
    generate_scene(scenario, tmp_path / 'b')
    assert _scene_digest(tmp_path / 'a') == _scene_digest(tmp_path / 'b')
    drawn = truth['drawn']
    assert truth['fps'] == drawn['fps'] and truth['rig']['left']['image_width'] == \
        drawn['rig']['width']
    assert truth['rig']['left']['distortion_coefficients']['data'] == \
        drawn['rig']['distortion']
    generate_scene(validate_scenario(dict(TINY_RANDOM, seed=22)), tmp_path / 'c')
    assert _scene_digest(tmp_path / 'c') != _scene_digest(tmp_path / 'a')


def test_in_memory_dataset_equals_the_bag_path(tmp_path):
    scenario = validate_scenario(dict(TINY_RANDOM, seed=31))
    generate_scene(scenario, tmp_path / 'scene')
    from_bag = ds.scene_arrays(tmp_path / 'scene')
    in_memory, truth = ds.simulated_scene_arrays(scenario)
    assert json.loads((tmp_path / 'scene' / TRUTH_FILE).read_text()) == \
        json.loads(json.dumps(truth))
    assert set(from_bag) == set(in_memory)
    assert len(from_bag['track_label']) > 0
    for key in from_bag:  # the gbdt rows hold NaN where a feature is missing: equal too
        assert np.array_equal(from_bag[key], in_memory[key],
                              equal_nan=from_bag[key].dtype.kind == 'f'), key


def test_simulate_dataset_without_out_writes_no_bag(tmp_path, capsys):
    import argparse

    from persistence_ros.simulation import command
    scenario = tmp_path / 'tiny_random.yaml'
    scenario.write_text(json.dumps(TINY_RANDOM))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    data = tmp_path / 'data'
    args = parser.parse_args(['--scenario', str(scenario), '--seed', '40', '--scenes', '2',
                              '--dataset', str(data), '--quiet'])
    assert command.main(args) == 0
    manifest = json.loads((data / 'manifest.json').read_text())
    assert [e['name'] for e in manifest['scenes']] == ['tiny_random-s0040',
                                                       'tiny_random-s0041']
    assert {e['rig']['image_width'] for e in manifest['scenes']} <= set(range(144, 193))
    assert sorted(p.name for p in tmp_path.rglob('*') if p.is_file()) == [
        'manifest.json', 'tiny_random-s0040.npz', 'tiny_random-s0041.npz',
        'tiny_random.yaml']
    # an override that the draw would replace is refused, not ignored
    args = parser.parse_args(['--scenario', str(scenario), '--dataset', str(data),
                              '--size', '640x480', '--quiet'])
    assert command.main(args) == 2
    assert 'randomize.rig' in capsys.readouterr().err


def test_a_stopped_data_set_run_keeps_its_finished_scenes(tmp_path):
    scenarios = [validate_scenario(dict(TINY_RANDOM, seed=seed)) for seed in (50, 51)]

    def stopped_after_one(results):
        for k, entry in enumerate(results):
            if k == 1:
                raise KeyboardInterrupt  # as a run stopped by the user or a time limit
            yield entry

    with pytest.raises(KeyboardInterrupt):
        ds.build_simulated_dataset(scenarios, tmp_path, progress=stopped_after_one)
    manifest = json.loads((tmp_path / 'manifest.json').read_text())
    assert [e['name'] for e in manifest['scenes']] == ['tiny_random-s0050']
    # append the seed that did not finish: the data set is complete
    manifest = ds.build_simulated_dataset(scenarios[1:], tmp_path, append=True)
    assert [e['name'] for e in manifest['scenes']] == ['tiny_random-s0050',
                                                       'tiny_random-s0051']


def test_textures_come_from_installed_photographs():
    from persistence_ros.simulation import textures
    for pool in textures.POOLS.values():
        for names in pool.values():
            for name in names:
                png = np.frombuffer(textures.png_bytes(name), np.uint8)
                assert cv2.imdecode(png, cv2.IMREAD_COLOR).shape[2] == 3
    train = {n for names in textures.POOLS['train'].values() for n in names}
    held = {n for names in textures.POOLS['heldout'].values() for n in names}
    assert not train & held
    with pytest.raises(textures.TextureError, match='no such_photo'):
        textures.png_bytes('opencv:such_photo')


def test_detector_options_off_draw_nothing_and_on_change_boxes():
    from persistence_ros.simulation.noise import NoiseModel
    cfg = load_scenario('noisy')['detector']
    raw = [{'box': [50.0, 40.0, 20.0, 30.0], 'score': 0.6, 'kind': 'object',
            'object_id': 'obj0', 'source': 'obj0'}]

    def run(config, seed=3):
        model = NoiseModel(config, np.random.default_rng(seed), 160, 120, 20, 'left')
        return [model.apply(f, [dict(d) for d in raw]) for f in range(20)]

    base = run(cfg)
    assert run(dict(cfg, fp_score=[0.25, 0.85], fp_cluster=[1, 1], jitter_rel=0.0)) == base
    clustered = run(dict(cfg, fp_cluster=[3, 3]))
    sources = {d['source'] for frame in clustered for d in frame}
    assert any(re.fullmatch(r'fpL\d+c1', s) for s in sources)
    calibrated = run(dict(cfg, score_gain=0.5, score_bias=0.1, miss_prob=0.0))
    scores = [d['score'] for frame in calibrated for d in frame if d['kind'] == 'object']
    assert len(scores) == 20 and np.allclose(scores, 0.4)
    wide = run(dict(cfg, jitter_px=0.0, jitter_rel=0.1, miss_prob=0.0))
    spread = np.std([d['box'][1] for frame in wide for d in frame if d['kind'] == 'object'])
    assert 1.5 < spread < 6.0  # 0.1 of the 30 px box height


def test_bench_render_times_sizes_and_randomized_scenes(tmp_path):
    from persistence_ros.tools import bench
    sizes = bench.bench_render_sizes('clean', 2, '64x48,96x72')
    assert [(r['width'], r['height']) for r in sizes] == [(64, 48), (96, 72)]
    assert all(r['stereo_frames'] == 2 and r['stereo_frames_per_s'] > 0 for r in sizes)
    with pytest.raises(ValueError, match='--sizes'):
        bench.bench_render_sizes('clean', 2, '64by48')
    scenario = tmp_path / 'tiny_random.yaml'
    scenario.write_text(json.dumps(TINY_RANDOM))
    result = bench.bench_render_scenes(str(scenario), 50, 1)
    row, = result['scenes']
    assert row['seed'] == 50 and 144 <= row['width'] <= 192 and row['distorted']
    assert 0 < row['render_s'] < row['seconds'] and row['frames'] >= 6
    assert result['mean_seconds_per_scene'] == row['seconds']


def test_stereo_false_positives_are_seen_by_both_cameras_on_one_row():
    scenario = load_scenario('clean', seed=3, overrides={
        'duration_s': 2.0, 'fps': 8.0, 'rig': {'width': 160, 'height': 120},
        'detector': {'stereo_false_positives': 4, 'lingering_frames': [6, 12],
                     'jitter_px': 0.0, 'miss_prob': 0.0}})
    with simulated_scene(scenario) as sim:
        for _ in sim.frames():
            pass
        truth, sources = sim.truth, sim.sources
    seen = {}
    for det_id, source in sources.items():
        if source.startswith('sfp'):
            det = truth['detections'][det_id]
            assert det['kind'] == 'false_positive' and det['object_id'] is None
            seen.setdefault((source, det['frame']), {})[det['camera']] = det['box']
    pairs = [views for views in seen.values() if len(views) == 2]
    assert len(pairs) >= 5
    for views in pairs:  # a rectified rig: the same row, the left box right of the right one
        assert abs(views['left'][1] - views['right'][1]) < 0.01
        assert views['left'][0] > views['right'][0]
    plain = load_scenario('clean', seed=3, overrides={
        'duration_s': 2.0, 'fps': 8.0, 'rig': {'width': 160, 'height': 120}})
    with simulated_scene(plain) as sim:
        for _ in sim.frames():
            pass
        assert not any(s.startswith('sfp') for s in sim.sources.values())
