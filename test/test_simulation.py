"""Scene simulator: projection, reflections, determinism, bags and the data set (tiny renders)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from persistence_ros.detections import stamp_to_ns
from persistence_ros.simulation import dataset as ds
from persistence_ros.simulation.generate import generate_scene, SOURCES_FILE, TRUTH_FILE
from persistence_ros.simulation.scenario import (list_presets, load_scenario, ScenarioError,
                                                 validate_scenario)
from persistence_ros.simulation.scene import build_scene, SceneRenderer

TINY = {'rig': {'width': 160, 'height': 120}, 'fps': 10.0}


def _tiny(name: str, seed: int, frames: int, **extra) -> dict:
    overrides = dict(TINY, duration_s=frames / TINY['fps'])
    overrides.update(extra)
    return load_scenario(name, seed=seed, overrides=overrides)


@pytest.fixture(scope='module')
def floor_scene(tmp_path_factory):
    """Return (scene_dir, truth) of a small reflective_floor scene."""
    out = tmp_path_factory.mktemp('sim') / 'reflective_floor-s0005'
    truth = generate_scene(_tiny('reflective_floor', 5, 12), out)
    return out, truth


@pytest.fixture(scope='module')
def noisy_scene(tmp_path_factory):
    """Return (scene_dir, truth) of a small noisy scene with glare."""
    out = tmp_path_factory.mktemp('sim') / 'noisy-s0011'
    truth = generate_scene(_tiny('noisy', 11, 10, glare={'count': 2}), out)
    return out, truth


def test_presets_load_and_bad_keys_are_named():
    names = list_presets()
    for required in ('clean', 'cluttered', 'noisy', 'reflective_floor', 'window', 'glare',
                     'mixed_hard'):
        assert required in names
        scenario = load_scenario(required)
        assert scenario['name'] == required
    assert load_scenario('clean')['objects']['count'] == 2
    assert load_scenario('cluttered')['objects']['count'] == 5
    assert load_scenario('noisy')['detector']['false_positives'] == 20
    with pytest.raises(ScenarioError, match='detector.mis_prob'):
        validate_scenario({'detector': {'mis_prob': 0.1}})
    with pytest.raises(ScenarioError, match='objects.count'):
        validate_scenario({'objects': {'count': 'many'}})
    with pytest.raises(ScenarioError, match='objects.shapes'):
        validate_scenario({'objects': {'shapes': ['torus']}})


def test_projection_matches_rendered_sphere_centroids():
    scenario = validate_scenario({
        'seed': 3, 'duration_s': 1.0, 'fps': 5.0, 'rig': {'width': 160, 'height': 120},
        'objects': {'count': 3, 'shapes': ['sphere'], 'trajectories': ['circular'],
                    'size_range_m': [0.06, 0.1]}})
    spec = build_scene(scenario)
    renderer = SceneRenderer(spec)
    checked = 0
    try:
        for frame in range(spec.n_frames):
            rendered = renderer.render(frame)
            for cam in ('left', 'right'):
                for obj in spec.objects:
                    mask = rendered.geom_ids[cam] == renderer.geom_ids[obj.id]
                    ys, xs = np.nonzero(mask)
                    if len(xs) < 20 or xs.min() == 0 or ys.min() == 0 \
                            or xs.max() == 159 or ys.max() == 119:
                        continue  # not fully in view
                    pixel, depth = renderer.project(obj.positions[frame][None], cam)
                    assert depth[0] > 0
                    assert np.hypot(xs.mean() - pixel[0, 0], ys.mean() - pixel[0, 1]) < 1.0
                    checked += 1
    finally:
        renderer.close()
    assert checked >= 8


def test_floor_reflections_detected_and_below_floor(floor_scene):
    scene_dir, truth = floor_scene
    dets = truth['detections']
    reflections = [d for d in dets.values() if d['kind'] == 'reflection']
    assert len(reflections) >= 10
    assert all(d['object_id'] in truth['objects'] for d in reflections)
    p_left = np.array(truth['rig']['left']['projection_matrix']['data']).reshape(3, 4)
    p_right = np.array(truth['rig']['right']['projection_matrix']['data']).reshape(3, 4)
    world_T_left = np.array(truth['rig']['world_T_left_optical'])

    def heights(kind):
        by_key = {}
        for d in dets.values():
            if d['kind'] == kind:
                by_key.setdefault((d['frame'], d['object_id']), {})[d['camera']] = d['box']
        pairs = [v for v in by_key.values() if len(v) == 2]
        left = np.array([p['left'][:2] for p in pairs], float).T
        right = np.array([p['right'][:2] for p in pairs], float).T
        homog = cv2.triangulatePoints(p_left, p_right, left, right)
        points = (homog[:3] / homog[3]).T
        return (points @ world_T_left[:3, :3].T + world_T_left[:3, 3])[:, 2]

    below = heights('reflection')
    above = heights('object')
    assert len(below) >= 5 and len(above) >= 5
    assert np.all(below < 0.0)
    assert np.all(above > 0.0)
    # the ground plane in the left optical frame agrees with world z = 0
    a, b, c, d = truth['rig']['ground_plane_left_optical']
    origin_left = np.linalg.inv(world_T_left) @ np.array([0.3, 1.0, 0.0, 1.0])
    assert abs(np.dot([a, b, c], origin_left[:3]) + d) < 1e-6


def test_truth_schema(noisy_scene):
    _, truth = noisy_scene
    assert truth['schema_version'] == 1 and truth['scenario'] == 'noisy' and truth['seed'] == 11
    assert [f['index'] for f in truth['frames']] == list(range(10))
    assert truth['frames'][0]['stamp_ns'] == 1_000_000_000
    assert abs(truth['rig']['baseline_m'] - 0.12) < 1e-6
    kinds = {d['kind'] for d in truth['detections'].values()}
    assert {'object', 'false_positive'} <= kinds
    for det_id, det in truth['detections'].items():
        prefix = 'L' if det['camera'] == 'left' else 'R'
        assert det_id.startswith(f'{prefix}{det["frame"]:06d}-')
        assert (det['object_id'] is None) == (det['kind'] in ('glare', 'false_positive'))
    for obj in truth['objects'].values():
        assert len(obj['states']) == 10
    for cam in ('left', 'right'):
        assert set(truth['gt_boxes'][cam]) == {str(i) for i in range(10)}


def test_same_seed_same_bytes(tmp_path, noisy_scene):
    scene_dir, _ = noisy_scene
    again = tmp_path / 'again'
    generate_scene(_tiny('noisy', 11, 10, glare={'count': 2}), again)
    assert (again / TRUTH_FILE).read_bytes() == (scene_dir / TRUTH_FILE).read_bytes()
    assert (again / SOURCES_FILE).read_bytes() == (scene_dir / SOURCES_FILE).read_bytes()
    other = tmp_path / 'other'
    generate_scene(_tiny('noisy', 12, 10, glare={'count': 2}), other)
    assert (other / TRUTH_FILE).read_bytes() != (scene_dir / TRUTH_FILE).read_bytes()


def test_bag_readable_with_rosbags_and_mcap(floor_scene):
    from mcap_ros2.reader import read_ros2_messages

    from persistence_ros import bag_io
    scene_dir, truth = floor_scene
    topics = bag_io.bag_topics(scene_dir)
    assert topics['/stereo/left/detections'] == 'persistence_ros/msg/Detection2DArray'
    assert topics['/stereo/right/image_raw'] == 'sensor_msgs/msg/Image'
    assert topics['/stereo/left/camera_info'] == 'sensor_msgs/msg/CameraInfo'
    ids = set()
    for topic, stamp_ns, msg in bag_io.read_messages(scene_dir, ['/stereo/left/detections',
                                                                 '/stereo/right/camera_info']):
        assert stamp_to_ns(msg.header.stamp) == stamp_ns
        if topic.endswith('detections'):
            assert msg.header.frame_id == 'stereo_left_optical'
            ids.update(d.id for d in msg.detections)
        else:
            p = np.asarray(msg.p).reshape(3, 4)
            assert p[0, 3] == pytest.approx(-p[0, 0] * 0.12)
    assert ids == {k for k, d in truth['detections'].items() if d['camera'] == 'left'}
    mcap_files = list(Path(scene_dir).glob('*.mcap'))
    assert len(mcap_files) == 1
    counted = {}
    for item in read_ros2_messages(str(mcap_files[0])):
        counted[item.channel.topic] = counted.get(item.channel.topic, 0) + 1
        if item.channel.topic == '/stereo/right/detections':
            for det in item.ros_msg.detections:
                assert truth['detections'][det.id]['camera'] == 'right'
                assert truth['detections'][det.id]['box'][0] == pytest.approx(det.center_x,
                                                                              abs=1e-3)
    assert len(counted) == 6 and set(counted.values()) == {12}


def test_dataset_builder(tmp_path, floor_scene, noisy_scene):
    manifest = ds.build_dataset([floor_scene[0], noisy_scene[0]], tmp_path / 'data')
    assert manifest['geometry_features'] == list(ds.GEOMETRY_FEATURES)
    on_disk = json.loads((tmp_path / 'data' / 'manifest.json').read_text())
    assert on_disk == manifest
    splits = ds.dataset_splits(manifest)
    names = [n for split in splits.values() for n in split]
    assert len(names) == len(set(names)) == 2
    assert manifest['split_by'] == 'seed'
    for entry, (scene_dir, truth) in zip(manifest['scenes'], [noisy_scene, floor_scene]):
        assert entry['name'] == ds.scene_name(truth['scenario'], truth['seed'])
        assert entry['split'] == ds.split_of(entry['name'])
        arrays = ds.load_scene_arrays(tmp_path / 'data', entry)
        n, f = entry['tracks'], entry['frames']
        assert arrays['crops'].shape == (f, 64, 64, 3) and arrays['crops'].dtype == np.uint8
        assert arrays['geometry'].shape == (f, len(ds.GEOMETRY_FEATURES))
        assert arrays['geometry'].dtype == np.float32
        assert arrays['track_offsets'][0] == 0 and arrays['track_offsets'][-1] == f
        assert arrays['track_label'].shape == (n,) and arrays['track_kind'].dtype.kind == 'U'
        # every row is a detection of the scene, labelled with its true kind
        assert len(arrays['frame_detection_id']) == f
        kinds = [truth['detections'][d]['kind'] for d in arrays['frame_detection_id']]
        assert np.array_equal(arrays['frame_label'], [k == 'object' for k in kinds])
        # each stereo track gives at most one sequence per camera, and its rows are in order
        pairs = list(zip(arrays['track_id'], arrays['track_camera']))
        assert len(pairs) == len(set(pairs))
        for i, camera in enumerate(arrays['track_camera']):
            rows = slice(arrays['track_offsets'][i], arrays['track_offsets'][i + 1])
            assert {truth['detections'][d]['camera']
                    for d in arrays['frame_detection_id'][rows]} == {camera}
            assert np.all(np.diff(arrays['frame_stamp_ns'][rows]) > 0)
        assert set(arrays['track_kind']) <= {'object', 'reflection', 'glare', 'false_positive'}
        # real only when most detections are objects (a tie is transient, kind 'object')
        assert np.all(arrays['track_kind'][arrays['track_label'] == 1] == 'object')
        partner = arrays['geometry'][:, 10] > 0
        assert partner.any()
        # rectified rig: paired boxes mostly lie on the same row (residual clipped at 50 px)
        assert np.median(arrays['geometry'][partner, 7]) < 3.0
        assert np.all(arrays['geometry'][:, 7] <= 50.0)
    floor_entry = [e for e in manifest['scenes'] if e['scenario'] == 'reflective_floor'][0]
    arrays = ds.load_scene_arrays(tmp_path / 'data', floor_entry)
    # the gbdt baseline's rows: one per labelled stereo track, with and without the plane
    from persistence_ros.gbdt import FEATURE_NAMES
    gbdt = arrays['gbdt_features']
    assert gbdt.shape[1:] == (2, len(FEATURE_NAMES)) and len(gbdt) == len(arrays['gbdt_label'])
    assert set(arrays['gbdt_track_id']) <= set(arrays['track_id']) and len(gbdt) > 0
    height = FEATURE_NAMES.index('height_median')
    assert np.isfinite(gbdt[:, 0, height]).any() and np.isnan(gbdt[:, 1, height]).all()
    x, y = ds.gbdt_training_rows(tmp_path / 'data', floor_entry['split'])
    assert x.shape[1] == len(FEATURE_NAMES) and len(x) == len(y) >= 2 * len(gbdt)
    # triangulated heights above the true floor plane: reflections below, objects above
    # (0 where the frame had no valid stereo point)
    signs = {'object': set(), 'reflection': set()}
    for i, kind in enumerate(arrays['track_kind']):
        rows = slice(arrays['track_offsets'][i], arrays['track_offsets'][i + 1])
        heights = arrays['geometry'][rows, 9]
        if kind in signs:
            signs[kind].update(np.sign(heights[heights != 0]).tolist())
    assert signs == {'object': {1.0}, 'reflection': {-1.0}}


def test_dataset_scenes_can_be_added_to_a_data_set(tmp_path, floor_scene, noisy_scene):
    first = ds.build_dataset([floor_scene[0]], tmp_path / 'data')
    both = ds.build_dataset([noisy_scene[0]], tmp_path / 'data', append=True)
    names = [e['name'] for e in both['scenes']]
    added = ds.scene_name('noisy', noisy_scene[1]['seed'])
    assert names == sorted([e['name'] for e in first['scenes']] + [added])
    assert both['scenes'][names.index(first['scenes'][0]['name'])] == first['scenes'][0]
    with pytest.raises(ValueError, match='duplicate scene'):
        ds.build_dataset([noisy_scene[0]], tmp_path / 'data', append=True)
    with pytest.raises(ValueError, match='crop_size'):
        ds.build_dataset([noisy_scene[0]], tmp_path / 'data', crop_size=32, append=True)
    # without append the manifest is replaced
    assert len(ds.build_dataset([noisy_scene[0]], tmp_path / 'data')['scenes']) == 1


def test_dataset_refuses_evaluation_seeds(tmp_path):
    scene = tmp_path / 'clean-s1003'
    generate_scene(_tiny('clean', 1003, 2), scene)
    with pytest.raises(ValueError, match='evaluation seed'):
        ds.build_dataset([scene], tmp_path / 'data')


def test_command_single_scene(tmp_path):
    import argparse

    from persistence_ros.simulation import command
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    out = tmp_path / 'bag'
    args = parser.parse_args(['--scenario', 'glare', '--seed', '4', '--out', str(out),
                              '--duration', '0.4', '--size', '96x72', '--quiet'])
    assert command.main(args) == 0
    truth = json.loads((out / TRUTH_FILE).read_text())
    assert truth['rig']['left']['image_width'] == 96 and len(truth['frames']) == 6
    assert (out / 'metadata.yaml').is_file()
    assert command.main(args) == 2  # refuses to overwrite without --overwrite


def test_find_scene_dirs_follows_links_and_refuses_an_empty_selection(tmp_path):
    from persistence_ros.simulation.dataset import find_scene_dirs
    rendered = tmp_path / 'rendered'
    for name in ('a-s0001', 'a-s0002'):
        (rendered / name).mkdir(parents=True)
        (rendered / name / 'truth.json').write_text('{}')
    selection = tmp_path / 'selection'
    selection.mkdir()
    (selection / 'a-s0002').symlink_to(rendered / 'a-s0002', target_is_directory=True)
    assert [p.name for p in find_scene_dirs(rendered)] == ['a-s0001', 'a-s0002']
    assert [p.name for p in find_scene_dirs(selection)] == ['a-s0002']
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no scene directory'):
        find_scene_dirs(tmp_path / 'empty')


def test_overwrite_replaces_only_a_scene_the_package_wrote(tmp_path):
    scenario = _tiny('clean', 1, 2)
    for extra in ({'keep.txt': 'mine'}, {TRUTH_FILE: '{}', 'keep.txt': 'mine'},
                  {'metadata.yaml': 'x', 'other.mcap': 'x'}):
        folder = tmp_path / f'folder{len(extra)}{sorted(extra)[0]}'
        folder.mkdir()
        for name, text in extra.items():
            (folder / name).write_text(text)
        with pytest.raises(FileExistsError, match='not a scene written by persistence_ros'):
            generate_scene(scenario, folder, overwrite=True)
        assert {p.name: p.read_text() for p in folder.iterdir()} == extra
    link = tmp_path / 'link'
    link.symlink_to(tmp_path / 'folder2keep.txt', target_is_directory=True)
    with pytest.raises(FileExistsError, match='a file or a link'):
        generate_scene(scenario, link, overwrite=True)
    scene = tmp_path / 'scene'
    generate_scene(scenario, scene)
    first = {p.name: p.read_bytes() for p in scene.iterdir()}
    with pytest.raises(FileExistsError, match='use overwrite'):
        generate_scene(scenario, scene)
    generate_scene(scenario, scene, overwrite=True)  # a scene it wrote: replaced, same bytes
    assert {p.name: p.read_bytes() for p in scene.iterdir()} == first


def test_failed_render_leaves_no_partial_scene(tmp_path):
    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_scene(_tiny('clean', 1, 2), tmp_path / 'scene', progress=stop)
    assert list(tmp_path.iterdir()) == []


def _simulate(argv):
    import argparse

    from persistence_ros.simulation import command
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.main(parser.parse_args(argv + ['--quiet']))


def test_simulate_names_scene_folders_from_a_safe_scenario_name(tmp_path):
    scenario = tmp_path / 'config' / 'escape.yaml'
    scenario.parent.mkdir()
    scenario.write_text('name: ../escape\nduration_s: 0.2\nfps: 10.0\n'
                        'rig: {width: 64, height: 48}\nobjects: {count: 1}\n')
    out = tmp_path / 'out'
    argv = ['--scenario', str(scenario), '--seed', '3', '--scenes', '2', '--out', str(out)]
    assert _simulate(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config', 'out']
    assert sorted(p.name for p in out.iterdir()) == ['_escape-s0003', '_escape-s0004']
    truth = json.loads((out / '_escape-s0003' / TRUTH_FILE).read_text())
    assert truth['scenario'] == '../escape'  # the name itself is kept in the truth
    (out / '_escape-s0004' / 'notes.txt').write_text('mine')
    assert _simulate(argv + ['--overwrite']) == 2  # refused before rendering anything
    assert (out / '_escape-s0004' / 'notes.txt').read_text() == 'mine'


def test_simulate_malformed_yaml_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('objects: [1,\n')
    assert _simulate(['--scenario', str(bad), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert err == (f'simulate: {bad}: not a valid YAML file at line 2, column 1: expected the '
                   "node content, but found '<stream end>'\n")
    assert not (tmp_path / 'out').exists()
