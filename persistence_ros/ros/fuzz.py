"""
``persistence-ros bench fuzz`` / ``bench soak``: a hostile robot against a running node.

The node runs as its own process (the installed ``persistence_node`` with the package's
parameters file, ``use_sim_time`` false, calibrated from the camera_info topics), on the local
DDS environment (``ros.env``) and in a ROS domain of its own.  This process publishes a
synthesized valid stereo scene (``Scene``: N coloured boxes moving in front of a calibrated
rig, images, detections and camera_info of every frame, stamped with the wall clock) at a
fixed rate, and between its frames the malformed messages of every ``KINDS`` entry: bad
boxes, ids, images, stamps, calibrations and floods.  It records the node's ``~/tracks``
(arrival time per input stamp) and ``/diagnostics``, and reads the node's RSS from
``/proc/PID/status``.

Per kind it checks: the node is alive; valid frames are answered again (recovery) and how
many valid frames after the kind had a latency above normal (``recovery_frames``); every
reason the kind must produce is counted in ``/diagnostics`` within the kind's own round
(``rejected.<reason>`` or ``resets.<kind>``), and the first diagnostics message that shows
the new count says WARN (and how long after the injection it came).  ``soak`` publishes
only valid frames and reports RSS drift and drops.  A scene is synthesized rather than
rendered so that the harness costs little CPU beside the node (MuJoCo rendering at 30 Hz
would not).
"""

import argparse
from collections import Counter
import dataclasses
import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from persistence_ros.calibration import CameraCalibration, StereoCalibration
from persistence_ros.detections import Detection, DetectionFrame, stamp_to_ns
from persistence_ros.ros.env import fastdds_segments, local_dds_env, segments_left_since

NAMESPACE = '/fuzz'
TOPICS = ('left/camera_info', 'right/camera_info', 'left/image_raw', 'right/image_raw',
          'left/detections', 'right/detections')
FRAMES = {'left': 'fuzz_left_optical', 'right': 'fuzz_right_optical'}
BASELINE_M = 0.12
DIAGNOSTICS_PERIOD_S = 0.5


# -- a valid scene --------------------------------------------------------------------------

class Scene:
    """N coloured boxes moving in front of a rectified stereo rig; frames on demand."""

    def __init__(self, objects: int = 8, width: int = 320, height: int = 240, seed: int = 0):
        self.width, self.height = int(width), int(height)
        f = 0.9 * width
        k = [f, 0.0, width / 2.0, 0.0, f, height / 2.0, 0.0, 0.0, 1.0]
        p_left = k[:3] + [0.0] + k[3:6] + [0.0] + k[6:] + [0.0]
        p_right = k[:3] + [-f * BASELINE_M] + k[3:6] + [0.0] + k[6:] + [0.0]
        self.calibration = StereoCalibration(
            CameraCalibration(width, height, k, [0.0] * 5, P=p_left, frame_id=FRAMES['left']),
            CameraCalibration(width, height, k, [0.0] * 5, P=p_right,
                              frame_id=FRAMES['right']))
        rng = np.random.default_rng(seed)
        self.start = np.column_stack([rng.uniform(-0.8, 0.8, objects),
                                      rng.uniform(-0.4, 0.4, objects),
                                      rng.uniform(2.5, 5.0, objects)])
        self.velocity = rng.uniform(-0.3, 0.3, (objects, 3)) * [1.0, 0.3, 0.5]
        self.colours = rng.integers(40, 255, (objects, 3), dtype=np.uint8)
        self.background = np.full((height, width, 3), 70, np.uint8)
        self.background[height // 2:] = 110   # a floor

    def _positions(self, t: float) -> np.ndarray:
        # bounce inside the box x in [-1, 1], y in [-0.5, 0.5], z in [2, 6]
        low, high = np.array([-1.0, -0.5, 2.0]), np.array([1.0, 0.5, 6.0])
        span = high - low
        x = (self.start - low + self.velocity * t) % (2 * span)
        return low + np.where(x > span, 2 * span - x, x)

    def frame(self, k: int, t: float, stamp_ns: int):
        """Return (left DetectionFrame, right DetectionFrame, left rgb, right rgb) at time t."""
        fx = self.calibration.left.P[0, 0]
        points = self._positions(t)
        images = {side: self.background.copy() for side in ('left', 'right')}
        dets = {'left': [], 'right': []}
        for j in np.argsort(-points[:, 2]):   # far first, so near boxes are drawn on top
            x, y, z = points[j]
            size = max(4.0, 0.25 * fx / z)
            for side, shift in (('left', 0.0), ('right', -fx * BASELINE_M / z)):
                cx = fx * x / z + self.width / 2.0 + shift
                cy = fx * y / z + self.height / 2.0
                x0, y0 = int(max(0, cx - size / 2)), int(max(0, cy - size / 2))
                x1 = int(min(self.width, cx + size / 2))
                y1 = int(min(self.height, cy + size / 2))
                if x1 <= x0 or y1 <= y0:
                    continue
                images[side][y0:y1, x0:x1] = self.colours[j]
                dets[side].append(Detection(cx, cy, size, size, 0.9, 'object',
                                            f'{side[0]}{k}-{j}'))
        return (DetectionFrame(stamp_ns, FRAMES['left'], dets['left']),
                DetectionFrame(stamp_ns, FRAMES['right'], dets['right']),
                images['left'], images['right'])


# -- malformed messages -----------------------------------------------------------------------

@dataclasses.dataclass
class Kind:
    """
    One kind of malformed input.

    ``make(ctx)`` publishes it (``ctx``: a ``_Frame`` with the valid messages of the current
    frame and helpers); ``reasons``: counters it must raise (``rejected.X`` or ``resets.X``);
    ``answered``: whether the frame it rides on must still be answered.
    """

    name: str
    make: Callable
    reasons: Tuple[str, ...]
    answered: bool = False
    flood: bool = False


def _dets(frame: DetectionFrame, extra=(), replace=None, **changes) -> DetectionFrame:
    detections = list(frame.detections if replace is None else replace) + list(extra)
    return dataclasses.replace(frame, detections=detections, **changes)


def _box(cx=160.0, cy=120.0, w=10.0, h=10.0, score=0.9, det_id='bad'):
    return Detection(cx, cy, w, h, score, 'bad', det_id)


def _kinds(width: int, height: int) -> List[Kind]:
    """Return every kind (names are unique)."""
    def extra_boxes(*boxes):
        return lambda c: c.publish_set(left=_dets(c.left, boxes))

    def left_image(image_msg):
        return lambda c: c.publish_set(left_image=image_msg(c))

    def raw_image(c, **fields):
        msg = c.image_msg(c.left_rgb, 'left')
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    def info(**changes):
        def make(c):
            c.publish_set(left_info=c.info_msg('left', **changes))
        return make

    def many(n, prefix, score=0.95):
        rng = np.random.default_rng(n)
        return [_box(float(x), float(y), 6.0, 6.0, score, f'{prefix}{i}')
                for i, (x, y) in enumerate(zip(rng.uniform(0, width, n),
                                               rng.uniform(0, height, n)))]

    def shifted(c, dt_ns, topics=TOPICS):
        return c.publish_set(stamp_ns=c.stamp_ns + dt_ns, only=topics)

    def p_changing(c):
        for i in range(6):
            c.publish_info('left', p_shift=1.0 + i)
            c.publish_info('right')

    def unmatched(c):
        for _ in range(15):   # right detections 3 slops late: more than a sync queue holds
            c.publish_set(only=('right/detections',), stamp_ns=c.stamp_ns + 60_000_000)
            c.next_stamp()

    def queue_flood(c):
        for _ in range(40):
            c.publish_set()
            c.next_stamp()

    huge = 'x' * 100_000
    bigger = dict(height=height // 2, width=width // 2, step=width // 2 * 3)
    return [
        Kind('nan_box', extra_boxes(_box(float('nan'))), ('non_finite',), True),
        Kind('inf_box', extra_boxes(_box(w=float('inf'))), ('non_finite',), True),
        Kind('zero_size_box', extra_boxes(_box(w=0.0)), ('non_positive_size',), True),
        Kind('negative_size_box', extra_boxes(_box(h=-5.0)), ('non_positive_size',), True),
        Kind('score_above_one', extra_boxes(_box(score=1.5)), ('score_out_of_range',), True),
        Kind('score_negative', extra_boxes(_box(score=-0.1)), ('score_out_of_range',), True),
        Kind('huge_box', extra_boxes(_box(w=1e6, h=1e6)), ('box_too_large',), True),
        Kind('box_off_image', extra_boxes(_box(cx=-1e4)), ('box_outside_image',), True),
        Kind('id_100kb', extra_boxes(_box(det_id=huge)), ('id_too_long',), True),
        Kind('duplicate_ids', extra_boxes(_box(det_id='dup'), _box(30.0, 30.0, det_id='dup')),
             ('duplicate_id',), True),
        Kind('empty_ids', lambda c: c.publish_set(left=_dets(c.left, replace=[
            dataclasses.replace(d, id='') for d in c.left.detections])), (), True),
        # 500 boxes (20 kB) are read and the lowest scores dropped; 5000 (200 kB) are more
        # than detections.max_message_bytes and refused unread, so their frame is lost
        Kind('boxes_500', lambda c: c.publish_set(left=_dets(c.left, many(500, 'm'))),
             ('too_many_detections',), True, flood=True),
        Kind('boxes_5000', lambda c: c.publish_set(left=_dets(c.left, many(5000, 'm'))),
             ('message_too_large',), flood=True),
        Kind('boxes_5000_x20', lambda c: [c.publish_set(left=_dets(c.left, many(5000, 'm')),
                                                        advance=True) for _ in range(20)],
             ('message_too_large',), flood=True),
        Kind('new_tracks_flood', lambda c: [c.publish_set(
            left=_dets(c.left, many(99, f'n{i}-')), advance=True) for i in range(4)],
            ('too_many_tracks',), True, flood=True),
        Kind('empty_frame_id', lambda c: c.publish_set(left=_dets(c.left, frame_id='')),
             ('frame_id_mismatch',)),
        Kind('same_frame_ids', lambda c: c.publish_set(
            right=_dets(c.right, frame_id=FRAMES['left'])), ('frame_id_mismatch',)),
        Kind('image_frame_id', left_image(lambda c: c.image_msg(c.left_rgb, 'other')),
             ('frame_id_mismatch',)),
        Kind('encoding_yuv', left_image(lambda c: raw_image(c, encoding='yuv422')),
             ('unsupported_image',)),
        Kind('encoding_32fc1', left_image(lambda c: raw_image(
            c, encoding='32FC1', step=width * 4, data=bytes(width * height * 4))),
            ('unsupported_image',)),
        Kind('step_too_small', left_image(lambda c: raw_image(c, step=width)),
             ('bad_image_layout',)),
        Kind('data_too_short', left_image(lambda c: raw_image(c, data=bytes(100))),
             ('bad_image_layout',)),
        Kind('data_too_long', left_image(lambda c: raw_image(
            c, data=bytes(width * height * 3 + 4096))), ('bad_image_layout',)),
        Kind('image_wrong_size', left_image(lambda c: raw_image(
            c, data=bytes(bigger['step'] * bigger['height']), **bigger)),
            ('image_size_mismatch',)),
        Kind('image_empty', left_image(lambda c: raw_image(c, height=0, width=0, step=0,
                                                           data=b'')), ('empty_image',)),
        Kind('image_1080p', left_image(lambda c: raw_image(
            c, height=1080, width=1920, step=5760, data=bytes(5760 * 1080))),
            ('image_size_mismatch',), flood=True),
        Kind('image_mono8', left_image(lambda c: c.image_msg(
            np.ascontiguousarray(c.left_rgb[:, :, 1]), 'left', 'mono8')), (), True),
        Kind('stamp_zero_one_topic', lambda c: shifted(c, -c.stamp_ns, ('left/detections',)),
             ('stamp_jumped_back',)),
        Kind('stamp_2s_back_one_topic', lambda c: shifted(c, -2_000_000_000,
                                                          ('right/image_raw',)),
             ('stamp_jumped_back',)),
        Kind('set_one_day_ahead', lambda c: shifted(c, 86_400 * 10 ** 9),
             ('stamp_in_future',)),
        Kind('one_day_ahead_one_topic', lambda c: shifted(c, 86_400 * 10 ** 9,
                                                          ('left/detections',)),
             ('stamp_in_future',)),
        Kind('set_0.5s_back', lambda c: shifted(c, -500_000_000), ('stamp_not_increasing',)),
        Kind('stamp_nanosec_invalid', lambda c: c.publish_set(
            only=('left/detections',), nanosec=2_000_000_000), ('stamp_invalid',)),
        Kind('stamp_negative', lambda c: c.publish_set(only=('right/detections',),
                                                       sec=-5), ('stamp_invalid',)),
        Kind('duplicate_stamp', lambda c: [c.publish_set(only=('left/detections',))
                                           for _ in range(3)], ('sync_unmatched',)),
        Kind('left_right_never_match', unmatched, ('sync_unmatched',), flood=True),
        Kind('info_uncalibrated', info(k=[0.0] * 9), ('uncalibrated_camera_info',)),
        Kind('info_nan_k', info(k=[float('nan')] * 9), ('bad_camera_info',)),
        Kind('info_binning', info(binning_x=2), ('bad_camera_info',)),
        Kind('info_unknown_model', info(distortion_model='magic'), ('bad_camera_info',)),
        Kind('info_not_rotation', info(r=[2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
             ('bad_camera_info',)),
        Kind('info_p_changes_every_message', p_changing, ('camera_info_unstable',)),
        Kind('info_size_differs_from_images', lambda c: [
            c.publish_info('left', width=width * 2, height=height * 2) for _ in range(6)],
            ('camera_info_size_mismatch',)),
        Kind('info_right_no_baseline', lambda c: [c.publish_info('right', p_tx=0.0)
                                                  for _ in range(6)], ('bad_camera_info',)),
        Kind('full_set_flood', queue_flood, (), True, flood=True),
    ]


KINDS = tuple(k.name for k in _kinds(320, 240))


# -- the harness ----------------------------------------------------------------------------

class _Frame:
    """The valid messages of one frame, and what kinds publish with them."""

    def __init__(self, harness: 'Harness', k: int, stamp_ns: int):
        self.h, self.k, self.stamp_ns = harness, k, stamp_ns
        self.left, self.right, self.left_rgb, self.right_rgb = harness.scene.frame(
            k, k / harness.rate, stamp_ns)

    def next_stamp(self) -> None:
        """Move to a later stamp (a flood of sets needs distinct stamps)."""
        self.stamp_ns = max(self.stamp_ns + 1_000_000, time.time_ns())
        self.left = dataclasses.replace(self.left, stamp_ns=self.stamp_ns)
        self.right = dataclasses.replace(self.right, stamp_ns=self.stamp_ns)

    def image_msg(self, rgb, frame: str, encoding: str = 'rgb8'):
        from persistence_ros.ros.conversions import numpy_to_image
        return numpy_to_image(rgb, encoding, self.stamp_ns, FRAMES.get(frame, frame))

    def info_msg(self, side: str, p_shift: float = 0.0, p_tx: Optional[float] = None,
                 **changes):
        from persistence_ros.ros.conversions import calibration_to_camera_info
        msg = calibration_to_camera_info(getattr(self.h.scene.calibration, side), self.stamp_ns)
        p = list(msg.p)
        p[2] += p_shift
        if p_tx is not None:
            p[3] = p_tx
        msg.p = p
        for name, value in changes.items():
            setattr(msg, name, value)
        return msg

    def publish_info(self, side: str, **changes) -> None:
        self.h.publish(f'{side}/camera_info', self.info_msg(side, **changes),
                       malformed=bool(changes))

    def publish_set(self, left=None, right=None, left_image=None, right_image=None,
                    left_info=None, stamp_ns=None, only=TOPICS, sec=None, nanosec=None,
                    advance=False) -> None:
        """Publish the frame's six messages (infos, images, detections) with changes."""
        from persistence_ros.ros.conversions import detections_to_msg, ns_to_stamp
        stamp = self.stamp_ns if stamp_ns is None else stamp_ns
        shifted = stamp_ns is not None or sec is not None or nanosec is not None
        given = {'left/camera_info': left_info, 'left/image_raw': left_image,
                 'right/image_raw': right_image,
                 'left/detections': None if left is None else detections_to_msg(left),
                 'right/detections': None if right is None else detections_to_msg(right)}
        for topic in TOPICS:
            if topic not in only:
                continue
            msg = given.get(topic)
            bad = msg is not None or shifted
            if msg is None:
                side, kind = topic.split('/')
                msg = (self.info_msg(side) if kind == 'camera_info'
                       else self.image_msg(self.left_rgb if side == 'left' else self.right_rgb,
                                           side) if kind == 'image_raw'
                       else detections_to_msg(self.left if side == 'left' else self.right))
            msg.header.stamp = ns_to_stamp(stamp)
            if sec is not None:
                msg.header.stamp.sec = sec
            if nanosec is not None:
                msg.header.stamp.nanosec = nanosec
            self.h.publish(topic, msg, malformed=bad)
        if advance:
            self.next_stamp()


_STATUS_FIELDS = {'VmRSS:': 'rss', 'RssAnon:': 'anon', 'RssFile:': 'file',
                  'RssShmem:': 'shmem'}


def _memory_mb(pid: int) -> Dict[str, float]:
    """
    Return a process's resident memory in MB (``/proc/PID/status``): the whole and its parts.

    ``rss`` = ``anon`` (heap: Python, numpy, torch) + ``file`` (mapped libraries) + ``shmem``
    (shared memory: Fast DDS's shared-memory transport segments, which count as resident
    once a large message has touched their pages, bounded by the segment size).
    """
    out = {}
    with open(f'/proc/{pid}/status') as status:
        for line in status:
            fields = line.split()
            key = _STATUS_FIELDS.get(fields[0]) if fields else None
            if key:
                out[key] = int(fields[1]) / 1024.0
    return out


def _rss_mb(pid: int) -> float:
    """Return the resident set size of a process in MB (``/proc/PID/status`` VmRSS)."""
    return _memory_mb(pid).get('rss', float('nan'))


class Harness:
    """The node process, this process's publishers and recorders, the scene."""

    def __init__(self, rate: float = 15.0, objects: int = 8, width: int = 320,
                 height: int = 240, node_args: Optional[List[str]] = None, node_log=None):
        self.rate = float(rate)
        self.scene = Scene(objects, width, height)
        self.kinds = {k.name: k for k in _kinds(width, height)}
        self.node_args = list(node_args or [])
        self.node_log = node_log
        self.sent: Dict[int, float] = {}        # stamp -> publish time (valid frames)
        self.answered: Dict[int, float] = {}    # stamp -> tracks arrival time
        self.diagnostics: List[Tuple[float, int, Dict[str, str]]] = []
        self.messages = Counter()   # 'valid' / 'malformed' messages published
        self._lock = threading.Lock()
        self.process = None

    # -- set-up -------------------------------------------------------------------------

    def start(self, startup_timeout: float = 90.0) -> None:
        """Start the node and this process's ROS side; wait until they are connected."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        from persistence_ros.msg import Detection2DArray, TrackArray
        from persistence_ros.ros.replay import default_params_file, node_command

        os.environ.update(local_dds_env())
        args = ['-p', f'diagnostics.period:={DIAGNOSTICS_PERIOD_S}', '-p', 'log.throttle_s:=2.0'
                ] + self.node_args
        log = self.node_log if self.node_log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            node_command(NAMESPACE, default_params_file(), False, args),
            env=dict(local_dds_env(), PYTHONFAULTHANDLER='1'), stdout=log,
            stderr=subprocess.STDOUT)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, args=['fuzz'])
        self.node = rclpy.create_node('persistence_fuzz', context=self.context)
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        types = {'camera_info': CameraInfo, 'image_raw': Image, 'detections': Detection2DArray}
        self.publishers = {t: self.node.create_publisher(types[t.split('/')[1]],
                                                         f'{NAMESPACE}/{t}', qos)
                           for t in TOPICS}
        self.node.create_subscription(TrackArray, f'{NAMESPACE}/persistence_node/tracks',
                                      self._on_tracks, qos)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics,
                                      qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spin = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin.start()
        deadline = time.monotonic() + startup_timeout
        while not (all(p.get_subscription_count() for p in self.publishers.values())
                   and self.diagnostics):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'persistence_node did not come up (exit code '
                                   f'{self.process.poll()})')
            time.sleep(0.1)
        time.sleep(1.0)   # matched readers can still miss the first samples

    def close(self) -> Optional[int]:
        """Stop everything; return the node's exit code."""
        from persistence_ros.ros.replay import _stop_node
        if getattr(self, 'executor', None) is not None:
            self.executor.shutdown()
            self.spin.join(timeout=5.0)
            self.node.destroy_node()
            import rclpy
            rclpy.try_shutdown(context=self.context)
        return _stop_node(self.process) if self.process is not None else None

    # -- traffic --------------------------------------------------------------------------

    def _on_tracks(self, msg) -> None:
        with self._lock:
            self.answered.setdefault(stamp_to_ns(msg.header.stamp), time.monotonic())

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.endswith(': pipeline'):
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:
                    self.diagnostics.append((time.monotonic(), int.from_bytes(
                        status.level, 'little') if isinstance(status.level, bytes)
                        else int(status.level), values, status.message))

    def publish(self, topic: str, msg, malformed: bool = False) -> None:
        """Publish on a node input; count it."""
        self.publishers[topic].publish(msg)
        self.messages['malformed' if malformed else 'valid'] += 1

    def valid_frame(self, k: int) -> _Frame:
        """Publish valid frame ``k`` stamped now; remember when."""
        frame = _Frame(self, k, time.time_ns())
        frame.publish_set()
        with self._lock:
            self.sent[frame.stamp_ns] = time.monotonic()
        return frame

    def rss_mb(self) -> float:
        """Return the node's RSS in MB."""
        return _rss_mb(self.process.pid)

    def memory_mb(self) -> Dict[str, float]:
        """Return the node's resident memory and its parts in MB (``_memory_mb``)."""
        return _memory_mb(self.process.pid)

    def alive(self) -> bool:
        """Return True while the node process runs."""
        return self.process.poll() is None

    def latencies(self, stamps) -> List[float]:
        """Return the latency (ms, tracks arrival - publish) of answered valid frames."""
        with self._lock:
            return [1e3 * (self.answered[s] - self.sent[s]) for s in stamps
                    if s in self.answered]


class Runner:
    """Valid frames at a fixed rate, kinds injected between them."""

    def __init__(self, harness: Harness):
        self.h = harness
        self.k = 0
        self.next_t = time.monotonic()

    def frames(self, seconds: float, on_frame=None) -> List[int]:
        """
        Publish valid frames for ``seconds`` at the rate; return their stamps.

        A frame whose time has passed (this one thread was busy publishing a kind) goes out
        now and the schedule restarts from it: the missed frames are not sent late back to
        back.  A camera runs beside a flood rather than after it, and such a burst is a load
        of its own: `boxes_5000_x20` takes this harness 0.5-0.7 s to publish, and with a
        0.5 s catch-up the next 7 frames went out at once, their latency ramping for 8-9
        frames; without it they keep the normal latency (docs/benchmarks.md).
        """
        stamps = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.next_t = max(self.next_t + 1.0 / self.h.rate, time.monotonic())
            delay = self.next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = self.h.valid_frame(self.k)
            self.k += 1
            stamps.append(frame.stamp_ns)
            if on_frame is not None:
                on_frame(frame)
        return stamps

    def inject(self, kind: Kind, recover_s: float, burst: int = 1) -> Dict[str, object]:
        """
        Inject one kind on a valid frame; watch recovery; return its record.

        ``burst``: publish the kind that many times back to back (a flood kind once).
        """
        before = self.h.diagnostics[-1][2] if self.h.diagnostics else {}
        frame = _Frame(self.h, self.k, time.time_ns())
        self.k += 1
        started = time.monotonic()
        malformed = self.h.messages['malformed']
        ridden = frame.stamp_ns   # a flood moves on to later stamps: its first set
        for _ in range(1 if kind.flood else burst):
            kind.make(frame)
        if kind.answered:   # the frame it rode on counts as a valid frame
            with self.h._lock:
                self.h.sent[ridden] = started
        after = self.frames(recover_s)
        return {'kind': kind.name, 'started': started, 'ended': time.monotonic(),
                'before': before,
                'rss_mb': self.h.rss_mb(),
                'malformed': self.h.messages['malformed'] - malformed,
                'frame': ridden if kind.answered else None, 'after': after}


def _counter(values: Dict[str, str], reason: str) -> float:
    key = reason if reason.startswith('resets.') else f'rejected.{reason}'
    return float(values.get(key, 0))


def evaluate(h: Harness, record: Dict, normal_ms: float, threshold_ms: float) -> Dict:
    """Judge one injected kind (counters, WARN, recovery, latency)."""
    kind = h.kinds[record['kind']]
    out = {'kind': kind.name, 'malformed': record['malformed'], 'rss_mb': record['rss_mb']}
    # only what arrived while this kind's round ran: a rise seen later belongs to the next
    # round (a round that went uncounted was once credited with its next round's rise)
    with h._lock:
        diagnostics = [d for d in h.diagnostics
                       if record['started'] <= d[0] <= record['ended']]
    missing, warn_delays, not_warn = [], [], []
    for reason in kind.reasons:
        base = _counter(record['before'], reason)
        first = next((d for d in diagnostics if _counter(d[2], reason) > base), None)
        if first is None:
            missing.append(reason)
            continue
        warn_delays.append(first[0] - record['started'])
        if first[1] < 1:   # DiagnosticStatus.WARN == 1
            not_warn.append(reason)
    out['counted'] = not missing
    out['missing'] = missing
    out['warned'] = not not_warn and not missing
    out['warn_delay_s'] = max(warn_delays) if warn_delays else None
    after = record['after']
    lat = h.latencies(after)
    out['answered'] = f'{len(lat)}/{len(after)}'
    # recovery: valid frames after the kind before three in a row are back under the
    # threshold (a later lone slow frame is the machine's, not the kind's)
    ok = [s in h.answered and 1e3 * (h.answered[s] - h.sent[s]) <= threshold_ms
          for s in after]
    out['recovery_frames'] = next((i for i in range(len(ok)) if all(ok[i:i + 3])), len(ok))
    out['recovered'] = bool(after) and after[-1] in h.answered and len(lat) >= len(after) - 2
    if record['frame'] is not None:
        out['frame_answered'] = record['frame'] in h.answered
    out['latency_ms_max'] = max(lat) if lat else None
    return out


def run_fuzz(h: Harness, kinds: List[str], malformed: int = 0, rounds: int = 1,
             warmup_s: float = 4.0, recover_s: float = 1.4, burst: int = 1,
             log=print) -> Dict:
    """Inject the kinds (``rounds`` times, or until ``malformed`` messages); return a report."""
    runner = Runner(h)
    warm = runner.frames(warmup_s)
    settle = runner.frames(2.0)
    normal = statistics.median(h.latencies(settle) or [float('nan')])
    threshold = max(2.0 * normal, normal + 20.0)
    parts = h.memory_mb()
    rss = {'after_warmup_mb': parts['rss']}
    peak = rss['after_warmup_mb']
    records, k = [], 0
    started = time.monotonic()
    while True:
        for name in kinds:
            record = runner.inject(h.kinds[name], recover_s, burst)
            if not h.alive():
                raise RuntimeError(f'the node died after {name} (exit {h.process.poll()})')
            peak = max(peak, h.rss_mb())
            records.append(record)
        k += 1
        if k >= rounds and h.messages['malformed'] >= malformed:
            break
        log(f'fuzz: round {k}, {h.messages["malformed"]} malformed messages, '
            f'RSS {h.rss_mb():.0f} MB, {time.monotonic() - started:.0f} s')
    runner.frames(2.0 + DIAGNOSTICS_PERIOD_S)   # the last kind's counters
    rss['after_floods_mb'] = h.rss_mb()
    runner.frames(10.0)
    rss['end_mb'], rss['peak_mb'] = h.rss_mb(), peak
    rss['parts_after_warmup_mb'], rss['parts_end_mb'] = parts, h.memory_mb()
    results = [evaluate(h, r, normal, threshold) for r in records]
    return {'kinds': len(kinds), 'rounds': k, 'messages': dict(h.messages),
            'valid_frames_warmup': len(warm) + len(settle),
            'normal_latency_ms': normal, 'recovery_threshold_ms': threshold,
            'rss': rss, 'alive': h.alive(), 'results': results,
            'last_diagnostics': h.diagnostics[-1][2] if h.diagnostics else {}}


def run_soak(h: Harness, duration_s: float, warmup_s: float = 60.0, sample_s: float = 10.0,
             log=print) -> Dict:
    """Publish valid frames for ``duration_s``; report RSS drift, drops and latency."""
    runner = Runner(h)
    runner.frames(warmup_s)
    base = h.rss_mb()
    samples = [(0.0, base)]
    start = time.monotonic()
    stamps: List[int] = []
    while time.monotonic() - start < duration_s:
        stamps += runner.frames(sample_s)
        samples.append((time.monotonic() - start, h.rss_mb()))
        if not h.alive():
            raise RuntimeError(f'the node died (exit {h.process.poll()})')
        if len(samples) % 30 == 0:
            log(f'soak: {samples[-1][0]:.0f} s, RSS {samples[-1][1]:.0f} MB')
    time.sleep(1.0 + DIAGNOSTICS_PERIOD_S)
    lat = sorted(h.latencies(stamps))
    last = h.diagnostics[-1][2] if h.diagnostics else {}
    rss = [m for _, m in samples]
    # drift: the last tenth's mean against the first tenth's (after warm-up)
    tenth = max(1, len(rss) // 10)
    first, final = float(np.mean(rss[:tenth])), float(np.mean(rss[-tenth:]))
    return {'duration_s': duration_s, 'frames': len(stamps),
            'answered': sum(s in h.answered for s in stamps),
            'rss_after_warmup_mb': base, 'rss_first_tenth_mb': first,
            'rss_last_tenth_mb': final, 'rss_max_mb': max(rss),
            'rss_drift_percent': 100.0 * (final - first) / first,
            'latency_ms_p50': lat[len(lat) // 2] if lat else None,
            'latency_ms_p99': lat[int(0.99 * (len(lat) - 1))] if lat else None,
            'queue_drops': last.get('queue.drops'),
            'sync_unmatched': last.get('sync.unmatched_messages'),
            'rejected': {k: v for k, v in last.items() if k.startswith('rejected.')},
            'rss_samples': samples, 'alive': h.alive()}


def main(args: argparse.Namespace) -> Dict:
    """Run ``bench fuzz`` or ``bench soak``; print and return the report."""
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ.setdefault('ROS_LOG_DIR', tempfile.mkdtemp(prefix='persistence_fuzz_log_'))
    node_args = [arg for item in args.set for arg in ('-p', item)]
    if args.filter:
        node_args += ['-p', f'filter.name:={args.filter}']
    log = open(args.node_log, 'w') if args.node_log else None
    segments_before = fastdds_segments()
    harness = Harness(args.rate, args.objects, args.width, args.height, node_args, log)
    try:
        harness.start()
        if args.target == 'soak':
            report = run_soak(harness, args.duration, args.warmup,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
        else:
            kinds = args.kinds.split(',') if args.kinds else list(KINDS)
            unknown = [k for k in kinds if k not in harness.kinds]
            if unknown:
                raise ValueError(f'unknown kinds {unknown}; known: {", ".join(KINDS)}')
            report = run_fuzz(harness, kinds, args.malformed, args.rounds, burst=args.burst,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        report_exit = harness.close()
    report['node_exit_code'] = report_exit
    report['shared_memory_left'] = segments_left_since(segments_before)
    return report


def format_fuzz(report: Dict) -> str:
    """Return the fuzz report as a table (one row per kind; repeated kinds aggregated)."""
    rows: Dict[str, List[Dict]] = {}
    for r in report['results']:
        rows.setdefault(r['kind'], []).append(r)
    lines = ['| kind | malformed msgs | counted | WARN | WARN after s (max) | recovered | '
             'frames to normal latency (max) |', '| --- | --- | --- | --- | --- | --- | --- |']
    for name, rs in rows.items():
        n = len(rs)
        delays = [r['warn_delay_s'] for r in rs if r['warn_delay_s'] is not None]
        counted = f'{sum(r["counted"] for r in rs)}/{n}' if h_reasons(rs) else '(none due)'
        warned = f'{sum(r["warned"] for r in rs)}/{n}' if h_reasons(rs) else '-'
        lines.append(f'| {name} | {sum(r["malformed"] for r in rs)} | {counted} | {warned} | '
                     f'{max(delays):.2f} | ' if delays else
                     f'| {name} | {sum(r["malformed"] for r in rs)} | {counted} | {warned} | - | ')
        lines[-1] += (f'{sum(r["recovered"] for r in rs)}/{n} | '
                      f'{max(r["recovery_frames"] for r in rs)} |')
    return '\n'.join(lines)


def h_reasons(rs: List[Dict]) -> bool:
    """Return True if the kind of these results must raise a counter."""
    return bool(rs and (rs[0]['missing'] or rs[0]['warn_delay_s'] is not None))


def dump(report: Dict, path: Path) -> None:
    """Write a report as JSON."""
    Path(path).write_text(json.dumps(report, indent=1, default=str) + '\n')
