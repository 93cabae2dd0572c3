"""
``persistence-ros replay``: play a bag over DDS into persistence_node and record its outputs.

The node runs as its own process (``persistence_node --ros-args -r __ns:=NS --params-file
FILE -p use_sim_time:=true``: the same executable and parameters file as the launch file) with
the local DDS environment (``persistence_ros.ros.env``).  This process publishes the bag's
messages as raw CDR bytes read with ``rosbags`` (``publisher.publish(bytes)``), publishes
``/clock`` like ``ros2 bag play --clock``, and records the node's outputs (subscriptions with
``raw=True``) into an MCAP rosbag2 written by rosbags (``ros2 bag play`` and Foxglove open it).

One time base: the recording's log times are the messages' header stamps (the input's
clock); a message without a stamp (an empty MarkerArray) is logged at the ``/clock`` time the
replay last published, never at wall-clock time.  The node's input types follow the bag:
``vision_msgs`` detections set ``detections.type:=vision_msgs`` and images only on
``image_raw/compressed`` set ``images.transport:=compressed`` (unless ``--set`` names them).

Modes: ``timed`` sleeps to match the bag's stamps; ``fast`` publishes frame k+1 only once the
node's ``~/tracks`` for frame k arrived (back-pressure, ``--frame-timeout`` seconds at most),
so that nothing is dropped.  The ros2 CLI and rosbag2_py are not on PyPI, hence this command.

The summary says how many frames the node answered (``answered``: ``~/tracks`` messages) and
at what rate over the whole bag (``frames_per_s``: in ``fast`` mode the node's throughput,
in ``timed`` mode at most the bag's rate), and holds the node's last ``/diagnostics`` values
(queue drops, latency, time per stage: ``stage_ms.<stage>.p50/p99/max``).
"""

import argparse
from collections import defaultdict
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from persistence_ros.bag_io import get_typestore
from persistence_ros.detections import DETECTION_TYPES, stamp_to_ns
from persistence_ros.ros.conversions import message_class  # noqa: F401 - re-exported
from persistence_ros.ros.env import fastdds_segments, local_dds_env, segments_left_since

NODE_EXECUTABLE = 'persistence_node'
DEFAULT_NAMESPACE = '/stereo'
OUTPUTS = {  # node-relative name -> message type
    'persistence_node/tracks': 'persistence_ros/msg/TrackArray',
    'persistence_node/points': 'sensor_msgs/msg/PointCloud2',
    'persistence_node/markers': 'visualization_msgs/msg/MarkerArray',
    'persistence_node/debug_image': 'sensor_msgs/msg/Image',
    'persistence_node/cameras': 'visualization_msgs/msg/MarkerArray',
}
# Outputs the node publishes transient local (latched): recorded with a transient local
# subscription, which a volatile publisher would not match.
LATCHED_OUTPUTS = ('persistence_node/cameras',)
DIAGNOSTICS = ('/diagnostics', 'diagnostic_msgs/msg/DiagnosticArray')
# Messages stamped this close to a frame's first stamp belong to that frame (half of the
# node's default sync.slop; frames of a 60 Hz camera are 16.7 ms apart).
FRAME_TOLERANCE_NS = 10_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the replay options to ``parser``."""
    parser.add_argument('bag', type=Path, help='rosbag2 directory (MCAP or sqlite3)')
    parser.add_argument('--out', type=Path, required=True,
                        help="output rosbag2 directory (MCAP) with the node's outputs")
    parser.add_argument('--mode', choices=('timed', 'fast'), default='fast',
                        help='timed: bag timing; fast: as fast as the node keeps up '
                             '(default)')
    parser.add_argument('--params', type=Path, default=None,
                        help='node parameters file (default: the installed '
                             'config/persistence.yaml)')
    parser.add_argument('--namespace', default=DEFAULT_NAMESPACE,
                        help=f'namespace of the node; its inputs are NS/left/... '
                             f"(default {DEFAULT_NAMESPACE}, the simulator's topics)")
    parser.add_argument('--frame-timeout', type=float, default=5.0,
                        help='fast mode: seconds to wait for the tracks of a frame')
    parser.add_argument('--startup-timeout', type=float, default=60.0,
                        help='seconds to wait for the node to come up')
    parser.add_argument('--domain-id', type=int, default=None,
                        help='ROS_DOMAIN_ID for this run (default: inherited)')
    parser.add_argument('--max-frames', type=int, default=0, help='stop after N frames (0: all)')
    parser.add_argument('--json', type=Path, default=None,
                        help="also write the summary and the node's last diagnostics as JSON")
    parser.add_argument('--set', action='append', default=[], metavar='NAME:=VALUE',
                        help='override a node parameter (ros2 -p syntax, e.g. '
                             "'filter.ground_plane:=[0.0, -1.0, 0.0, 1.5]'); repeatable")


def default_params_file() -> Optional[Path]:
    """Return the installed (or source) config/persistence.yaml."""
    candidates = [Path(sys.prefix) / 'share' / 'persistence_ros' / 'config' / 'persistence.yaml',
                  Path(__file__).resolve().parents[2] / 'config' / 'persistence.yaml']
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('persistence_ros'))
                          / 'config' / 'persistence.yaml')
    except (ImportError, LookupError, ValueError, OSError):  # OSError: no AMENT_PREFIX_PATH
        pass
    return next((c for c in candidates if c.is_file()), None)


def node_command(namespace: str, params_file: Optional[Path], use_sim_time: bool = True,
                 extra: Optional[List[str]] = None) -> List[str]:
    """Return the command line starting persistence_node as a subprocess."""
    executable = Path(sys.prefix) / 'lib' / 'persistence_ros' / NODE_EXECUTABLE
    if executable.is_file():
        cmd = [str(executable)]
    else:  # source tree: run the module with this interpreter
        cmd = [sys.executable, '-m', 'persistence_ros.ros.persistence_node']
    cmd += ['--ros-args', '-r', f'__ns:={namespace}']
    if params_file is not None:
        cmd += ['--params-file', str(params_file)]
    cmd += ['-p', f'use_sim_time:={"true" if use_sim_time else "false"}']
    return cmd + list(extra or [])


def read_frames(bag: Path, namespace: str, tolerance_ns: int = FRAME_TOLERANCE_NS
                ) -> Tuple[Dict[str, str], List[Tuple[int, list]]]:
    """
    Return ``({topic: msgtype}, [(stamp_ns, [(topic, raw), ...]), ...])`` of the inputs.

    Messages are grouped into frames by header stamp, not log time (``ros2 bag record`` logs
    the time each message arrived, later than its stamp and different per topic): sorted
    by stamp, a message within ``tolerance_ns`` of its frame's first stamp joins the frame
    (cameras without a common trigger stamp the two sides a few ms apart). A frame's stamp
    is its left detections' stamp (the stamp of the node's outputs for it), else its first.
    Within a frame camera_info comes first, then images, then detections. Only topics under
    ``namespace`` are played.
    """
    prefix = namespace.rstrip('/') + '/'
    order = {'camera_info': 0, 'image_raw': 1, 'compressed': 1, 'detections': 2}
    store = get_typestore()
    stamped = []
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic.startswith(prefix)]
        types = {c.topic: c.msgtype for c in connections}
        for connection, _, raw in reader.messages(connections=connections):
            header = store.deserialize_cdr(raw, connection.msgtype).header
            stamped.append((stamp_to_ns(header.stamp), connection.topic, bytes(raw)))
    stamped.sort(key=lambda item: item[0])
    groups: List[list] = []
    for item in stamped:
        if groups and item[0] - groups[-1][0][0] <= tolerance_ns:
            groups[-1].append(item)
        else:
            groups.append([item])
    out = []
    for group in groups:
        left = [stamp for stamp, topic, _ in group if topic == f'{prefix}left/detections']
        msgs = sorted(((topic, raw) for _, topic, raw in group),
                      key=lambda m: order.get(m[0].rsplit('/', 1)[-1], 3))
        out.append((left[0] if left else group[0][0], msgs))
    return types, out


class Recorder:
    """Record raw messages of some topics into an MCAP rosbag2 (log time: receive order)."""

    def __init__(self, node, out: Path, topics: Dict[str, str]):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        self.path = Path(out)
        self._store = get_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._lock = threading.Lock()
        self._connections = {}
        self.counts: Dict[str, int] = defaultdict(int)
        self.track_stamps: List[int] = []
        self.clock_ns = 0  # the replay's /clock: the log time of messages without a stamp
        self.last_diagnostics: Optional[bytes] = None
        self.writing = True  # False: messages are only counted (after the bag was played)
        self._cond = threading.Condition(self._lock)
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        latched_qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._subscriptions = []
        for topic, msgtype in topics.items():
            self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                                   typestore=self._store)
            self._subscriptions.append(node.create_subscription(
                message_class(msgtype), topic,
                lambda raw, topic=topic, msgtype=msgtype: self._on_message(topic, msgtype, raw),
                latched_qos if topic.endswith(LATCHED_OUTPUTS) else qos, raw=True))

    def _on_message(self, topic: str, msgtype: str, raw: bytes) -> None:
        stamp_ns = self._stamp(raw, msgtype)
        with self._cond:
            if self.writing:
                self._writer.write(self._connections[topic], stamp_ns, raw)
            self.counts[topic] += 1
            if msgtype == OUTPUTS['persistence_node/tracks']:
                self.track_stamps.append(stamp_ns)
            elif msgtype == DIAGNOSTICS[1]:
                self.last_diagnostics = bytes(raw)
            self._cond.notify_all()

    def _stamp(self, raw: bytes, msgtype: str) -> int:
        msg = self._store.deserialize_cdr(raw, msgtype)
        header = getattr(msg, 'header', None)
        if header is None and msgtype == 'visualization_msgs/msg/MarkerArray' and msg.markers:
            header = msg.markers[0].header
        if header is None:
            return self.clock_ns
        return stamp_to_ns(header.stamp)

    def wait_tracks(self, stamp_ns: int, timeout: float) -> bool:
        """Wait until the tracks of ``stamp_ns`` (or later) were recorded."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self.track_stamps and self.track_stamps[-1] >= stamp_ns):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop_writing(self) -> Dict[str, int]:
        """Write nothing more (messages are still counted); return the counts so far."""
        with self._cond:
            self.writing = False
            return dict(self.counts)

    def diagnostics(self) -> Dict[str, str]:
        """Return the key -> value of the node's last /diagnostics message (empty: none)."""
        if self.last_diagnostics is None:
            return {}
        msg = self._store.deserialize_cdr(self.last_diagnostics, DIAGNOSTICS[1])
        return {kv.key: kv.value for status in msg.status for kv in status.values}

    def close(self) -> None:
        """Close the bag."""
        with self._lock:
            self._writer.close()


def input_parameters(types: Dict[str, str], namespace: str,
                     extra_node_args: Optional[List[str]] = None) -> List[str]:
    """
    Return the node arguments that make it subscribe to the bag's input types.

    ``-p detections.type:=vision_msgs`` for vision_msgs detections, ``-p
    images.transport:=compressed`` when the images are only on ``image_raw/compressed``;
    nothing for a parameter that ``extra_node_args`` already sets.
    """
    given = ' '.join(extra_node_args or [])
    prefix = namespace.rstrip('/')
    args = []
    if (types.get(f'{prefix}/left/detections') == DETECTION_TYPES['vision_msgs']
            and 'detections.type:=' not in given):
        args += ['-p', 'detections.type:=vision_msgs']
    if (f'{prefix}/left/image_raw' not in types and f'{prefix}/left/image_raw/compressed' in types
            and 'images.transport:=' not in given):
        args += ['-p', 'images.transport:=compressed']
    return args


def _wait(condition, timeout: float, process=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.05)
    return condition()


def replay(bag: Path, out: Path, mode: str = 'fast', params_file: Optional[Path] = None,
           namespace: str = DEFAULT_NAMESPACE, frame_timeout: float = 5.0,
           startup_timeout: float = 60.0, max_frames: int = 0, node_log=None,
           extra_node_args: Optional[List[str]] = None) -> Dict[str, object]:
    """Play ``bag`` into a persistence_node process and record to ``out``; return a summary."""
    import rclpy

    if not os.environ.get('AMENT_PREFIX_PATH') and (
            Path(sys.prefix) / 'share' / 'ament_index').is_dir():
        # The package is installed into this prefix (the venv); ament_index_python raises
        # OSError without AMENT_PREFIX_PATH.
        os.environ['AMENT_PREFIX_PATH'] = sys.prefix
    os.environ.update(local_dds_env())
    namespace = '/' + namespace.strip('/')
    params_file = params_file or default_params_file()
    types, frames = read_frames(Path(bag), namespace)
    if not frames:
        raise ValueError(f'{bag}: no messages under {namespace}/')
    if max_frames:
        frames = frames[:max_frames]
    outputs = {f'{namespace}/{name}': msgtype for name, msgtype in OUTPUTS.items()}
    outputs[DIAGNOSTICS[0]] = DIAGNOSTICS[1]
    node_args = list(extra_node_args or []) + input_parameters(types, namespace, extra_node_args)
    segments_before = fastdds_segments()
    process = _start_node(namespace, params_file, node_args, node_log)
    context = rclpy.Context()
    rclpy.init(context=context, args=['replay'])
    summary: Dict[str, object] = {'frames': len(frames), 'mode': mode, 'timeouts': 0}
    player = _Player(context)
    try:
        player.start(Path(out), outputs, types)
        player.wait_ready(namespace, process, startup_timeout)
        summary.update(player.play(frames, mode, process, frame_timeout))
        # the node's own numbers: its diagnostics timer runs on the bag's (sim) time, so move
        # the clock one period past the last frame and wait for the message
        summary['node'] = player.final_diagnostics(
            frames[-1][0], diagnostics_period(extra_node_args), frame_timeout)
    finally:
        player.close()
        rclpy.try_shutdown(context=context)
        summary['node_exit_code'] = _stop_node(process)
        # a node whose DDS participant outlived it leaves its segments in /dev/shm (RAM)
        summary['shared_memory_left'] = segments_left_since(segments_before)
    return summary


def diagnostics_period(extra_node_args: Optional[List[str]] = None) -> float:
    """Return the node's diagnostics.period (a ``-p diagnostics.period:=S`` or the default)."""
    from persistence_ros.ros.parameters import DEFAULTS
    period = float(DEFAULTS['diagnostics.period'])
    for arg in extra_node_args or []:
        if arg.startswith('diagnostics.period:='):
            try:
                period = float(arg.split(':=', 1)[1])
            except ValueError:
                pass
    return period


def format_node_stages(node: Dict[str, str]) -> str:
    """Return the node's per-stage times (``stage_ms.*`` of /diagnostics) as a table."""
    stages = []
    for key in node:
        if key.startswith('stage_ms.') and key.endswith('.p50'):
            stages.append(key[len('stage_ms.'):-len('.p50')])
    if not stages:
        return ''
    lines = ['node stage      p50 ms   p99 ms   max ms (last frames of /diagnostics)']
    for stage in stages:
        row = [node.get(f'stage_ms.{stage}.{stat}', 'nan') for stat in ('p50', 'p99', 'max')]
        lines.append(f'{stage:13s} ' + ' '.join(f'{float(v):8.2f}' for v in row))
    return '\n'.join(lines)


def _start_node(namespace: str, params_file: Optional[Path],
                extra_node_args: Optional[List[str]], node_log) -> subprocess.Popen:
    """Start persistence_node (sim time) with the local DDS environment; log to ``node_log``."""
    log = node_log if node_log is not None else subprocess.DEVNULL
    # PYTHONFAULTHANDLER: a node that hangs on shutdown dumps its threads' stacks on SIGABRT
    return subprocess.Popen(node_command(namespace, params_file, True, extra_node_args),
                            env=dict(local_dds_env(), PYTHONFAULTHANDLER='1'), stdout=log,
                            stderr=subprocess.STDOUT)


def _stop_node(process: subprocess.Popen) -> Optional[int]:
    """Stop the node if it still runs (SIGTERM, then SIGABRT for a stack dump, then kill)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15.0)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # stack dump into the node log
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode


class _Player:
    """This process's ROS side of a replay: publishes the bag and /clock, records outputs."""

    def __init__(self, context):
        self.context = context
        self.node = None
        self.recorder: Optional[Recorder] = None
        self.executor = None
        self.spin: Optional[threading.Thread] = None
        self.publishers: Dict[str, object] = {}
        self.clock = None

    def start(self, out: Path, outputs: Dict[str, str], types: Dict[str, str]) -> None:
        """Create the node, its recorder and publishers; spin it in a thread."""
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        node = self.node = Node('persistence_replay', context=self.context)
        self.recorder = Recorder(node, out, outputs)
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.publishers = {topic: node.create_publisher(message_class(msgtype), topic, qos)
                           for topic, msgtype in types.items()}
        self.clock = node.create_publisher(Clock, '/clock', 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self.spin = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin.start()

    def wait_ready(self, namespace: str, process: subprocess.Popen,
                   startup_timeout: float) -> None:
        """Wait until the node subscribes to the detections and publishes its tracks."""
        publishers, node = self.publishers, self.node

        def matched():
            return (all(p.get_subscription_count() > 0 for t, p in publishers.items()
                        if 'detections' in t)
                    and node.count_publishers(f'{namespace}/persistence_node/tracks') > 0)
        if not _wait(matched, startup_timeout, process):
            raise RuntimeError(f'persistence_node did not come up (exit code {process.poll()})')
        # images are subscribed only with use_images, camera_info only without calibration
        # files: give their discovery a moment too
        _wait(lambda: all(p.get_subscription_count() > 0 for t, p in publishers.items()
                          if 'image' in t or 'camera_info' in t), 5.0, process)
        time.sleep(1.0)  # matched readers can still miss the first samples (DDS discovery)

    def play(self, frames: List[Tuple[int, list]], mode: str, process: subprocess.Popen,
             frame_timeout: float) -> Dict[str, object]:
        """
        Publish the frames (``timed``: at the bag's pace; ``fast``: each after the last's tracks).

        Returns the summary entries: timeouts (fast mode), wall_s and the recorded counts.
        """
        from rosgraph_msgs.msg import Clock

        from persistence_ros.ros.conversions import ns_to_stamp

        timeouts = 0
        start_wall = time.monotonic()
        first_stamp = frames[0][0]
        for k, (stamp_ns, msgs) in enumerate(frames):
            if process.poll() is not None:
                raise RuntimeError(f'persistence_node exited with {process.returncode}')
            if mode == 'timed':
                delay = (stamp_ns - first_stamp) / 1e9 - (time.monotonic() - start_wall)
                if delay > 0:
                    time.sleep(delay)
            self.recorder.clock_ns = max(self.recorder.clock_ns, stamp_ns)
            self.clock.publish(Clock(clock=ns_to_stamp(stamp_ns)))
            if k == 0:  # camera_info first, so that the node is calibrated for frame 1
                infos = [item for item in msgs if 'camera_info' in item[0]]
                for topic, raw in infos:
                    self.publishers[topic].publish(raw)
                if infos:
                    time.sleep(0.5)
                msgs = [item for item in msgs if 'camera_info' not in item[0]]
            for topic, raw in msgs:
                self.publishers[topic].publish(raw)
            if k == 0:  # the bag's timing starts after the calibration pause, not before
                start_wall = time.monotonic()
            has_left = any(topic.endswith('/left/detections') for topic, _ in msgs)
            if (mode == 'fast' and has_left
                    and not self.recorder.wait_tracks(stamp_ns, frame_timeout)):
                timeouts += 1
        self.recorder.wait_tracks(frames[-1][0], frame_timeout)
        wall_s = time.monotonic() - start_wall
        answered = len(self.recorder.track_stamps)
        time.sleep(0.3)
        return {'timeouts': timeouts, 'wall_s': wall_s, 'answered': answered,
                'frames_per_s': answered / wall_s if wall_s > 0 else 0.0,
                'recorded': dict(self.recorder.counts)}

    def final_diagnostics(self, last_stamp_ns: int, period_s: float,
                          timeout: float) -> Dict[str, str]:
        """Tick /clock one diagnostics period past the last frame; return the node's values."""
        from rosgraph_msgs.msg import Clock

        from persistence_ros.ros.conversions import ns_to_stamp
        topic = DIAGNOSTICS[0]
        # the recording ends with the bag: these ticks and their message stay out of it
        before = self.recorder.stop_writing().get(topic, 0)
        stamp = last_stamp_ns
        deadline = time.monotonic() + timeout
        while self.recorder.counts.get(topic, 0) == before and time.monotonic() < deadline:
            stamp += int(0.5 * period_s * 1e9)
            self.clock.publish(Clock(clock=ns_to_stamp(stamp)))
            time.sleep(0.1)
        return self.recorder.diagnostics()

    def close(self) -> None:
        """Stop spinning and close the recording (what ``start`` got to create)."""
        if self.executor is not None:
            self.executor.shutdown()
        if self.spin is not None:
            self.spin.join(timeout=5.0)
        if self.recorder is not None:
            self.recorder.close()


def main(args: argparse.Namespace) -> int:
    """Run ``persistence-ros replay``."""
    if args.domain_id is not None:
        os.environ['ROS_DOMAIN_ID'] = str(args.domain_id)
    os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='persistence_replay_log_'))
    if args.out.exists() and any(args.out.iterdir()):
        print(f'replay: {args.out} exists and is not empty', file=sys.stderr)
        return 1
    if args.out.exists():
        args.out.rmdir()
    bad = [item for item in args.set if ':=' not in item]
    if bad:
        print(f'replay: --set needs NAME:=VALUE, got {bad}', file=sys.stderr)
        return 2
    summary = replay(args.bag, args.out, args.mode, args.params, args.namespace,
                     args.frame_timeout, args.startup_timeout, args.max_frames,
                     node_log=sys.stderr,
                     extra_node_args=[arg for item in args.set for arg in ('-p', item)])
    node = summary.pop('node', {})
    print(' '.join(f'{k}={v}' for k, v in summary.items()))
    keys = ('frames.processed', 'queue.drops', 'latency_ms.p50', 'latency_ms.p99',
            'gc.full_collections', 'gc.full_collections_ms')
    print('node: ' + ' '.join(f'{k}={node[k]}' for k in keys if k in node))
    table = format_node_stages(node)
    if table:
        print(table)
    if args.json:
        args.json.write_text(json.dumps(dict(summary, node=node), indent=1) + '\n')
    return 0
