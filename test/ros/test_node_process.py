"""The node as its own process: a stop by signal releases what the process held outside it."""

import signal
import subprocess
import time

import pytest

from persistence_ros.ros.env import fastdds_segments, local_dds_env, segments_left_since, \
    SHARED_MEMORY_DIR
from persistence_ros.ros.replay import default_params_file, node_command

STARTUP_TIMEOUT_S = 120.0


def wait_for_line(path, text, process, timeout_s):
    """Wait until the file at ``path`` holds ``text``; False if the process ended or timed out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors='replace'):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not SHARED_MEMORY_DIR.is_dir(), reason='no POSIX shared memory folder')
@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM],
                         ids=['SIGINT (ros2 launch)', 'SIGTERM (replay, systemd)'])
def test_a_stopped_node_leaves_no_shared_memory_behind(tmp_path, stop_signal):
    # The default filter (learned) runs the configure path that froze the rclpy context
    # (gc.freeze): its Fast DDS participant then outlived the process and left a 35 MB
    # segment in /dev/shm per run, RAM that nothing frees (docs/benchmarks.md).
    before = fastdds_segments()
    log_path = tmp_path / 'node.log'
    with open(log_path, 'w') as log:
        process = subprocess.Popen(
            node_command('/shm_check', default_params_file(), use_sim_time=False),
            env=local_dds_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            active = wait_for_line(log_path, 'active: ', process, STARTUP_TIMEOUT_S)
            mine = fastdds_segments() - before
            process.send_signal(stop_signal)
            exit_code = process.wait(timeout=60.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    node_log = log_path.read_text(errors='replace')
    assert active, node_log
    assert 'configured: filter learned' in node_log, node_log
    assert exit_code == 0, node_log
    # the check can fail: the node created segments of its own while it ran
    assert mine, 'the node created no shared-memory segment to check'
    leaked = segments_left_since(before)
    assert not leaked, f'left in {SHARED_MEMORY_DIR} by the stopped node: {leaked}'
