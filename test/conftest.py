"""Test-process environment: DDS stays on this machine, one ROS domain per pytest process."""

import os
from pathlib import Path
import sys
import tempfile

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Set before anything imports rclpy: localhost-only discovery, a domain id of our own (so
# concurrent test processes do not hear each other), logs in a temporary folder.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(10 + os.getpid() % 200))
os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='persistence_ros_test_log_'))
_profile = Path(sys.prefix) / 'share' / 'persistence_ros' / 'config' / 'fastdds.xml'
if not _profile.is_file():
    _profile = REPO_ROOT / 'config' / 'fastdds.xml'
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(_profile))
os.environ.setdefault('MUJOCO_GL', 'egl')


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (the CI machine has 2 cores; no oversubscription)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- a small rendered scene, shared by the tests that need a real bag ----------------------

SCENE_FRAMES = 20
SCENE_FRAME_IDS = {'left': 'stereo_left_optical', 'right': 'stereo_right_optical'}


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    """Render a tiny floor-reflection bag, 20 frames of 160x120; return it and its truth."""
    from persistence_ros.simulation.generate import generate_scene, load_truth
    from persistence_ros.simulation.scenario import load_scenario
    out = tmp_path_factory.mktemp('scene') / 'bag'
    scenario = load_scenario('reflective_floor', overrides={
        'duration_s': SCENE_FRAMES / 15.0, 'fps': 15.0, 'rig': {'width': 160, 'height': 120}})
    generate_scene(scenario, out)
    truth = load_truth(out)
    assert len(truth['frames']) == SCENE_FRAMES
    return out, truth


@pytest.fixture(scope='module')
def calibration_files(scene, tmp_path_factory):
    """Return the scene's left and right calibration YAML files (their paths as strings)."""
    from persistence_ros.calibration import CameraCalibration, save_calibration_yaml
    _, truth = scene
    folder = tmp_path_factory.mktemp('calib')
    paths = []
    for side, frame in SCENE_FRAME_IDS.items():
        path = folder / f'{side}.yaml'
        save_calibration_yaml(CameraCalibration.from_dict(truth['rig'][side], frame), path)
        paths.append(str(path))
    return paths
