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
