"""
persistence_node: stereo detections (+ images) in, persistent 3D tracks out.

A lifecycle node (``rclpy.lifecycle.LifecycleNode``):

* configure: reads and validates the parameters and applies them to the settings tree
  (``persistence_ros.ros.parameters``: the core ``Settings`` plus the node's own sections),
  loads the calibration files (or waits for ``left/camera_info`` + ``right/camera_info``),
  builds the persistence filter with ``filter_factory.build_filter`` (and the model on
  ``model.device``) and creates the publishers. A bad configuration returns FAILURE and logs
  what to fix.
* activate: subscribes (approximate-time synchronized) and starts the worker thread.
* deactivate / cleanup: release the subscriptions, the worker, the pipeline and the model.

Started plainly (``main()``, i.e. ``ros2 run`` / ``ros2 launch``) it configures and activates
itself; ``--managed`` leaves the transitions to a lifecycle manager.

The node only adapts: it converts messages to core types, calls ``StereoPipeline.process``
(which applies every input rule and names each refusal) and publishes the result.  Before
synchronization every input message passes a ``stamp_gate.StampGate`` (absurd, future and
lone out-of-order stamps refused; a reset only when every input jumped back), and the
camera_info topics feed a ``calibration.CameraInfoMonitor`` (the last good calibration is
kept while a camera_info keeps changing or disagrees with the images).

``/diagnostics`` tells the truth about the last period: level WARN when, since the last
message, frames were dropped, inputs left the synchronizer unmatched, anything was refused,
or the pipeline was reset or rebuilt (the message names which); ERROR when no frame was
processed for ``diagnostics.stall_timeout_s`` while inputs arrive.  Every case has a counter
(``rejected.<reason>``, ``resets.<kind>``), and the latency is reported as processing time
(``latency_ms``) and end to end (``latency_e2e_ms``: from the synchronized set to its
outputs published, the wait in the worker queue included; ``stamp_age_ms``: the node's clock
at publication minus the input stamp).

Inputs: ``left/detections``, ``right/detections`` (``detections.type``:
persistence_ros/Detection2DArray or vision_msgs/Detection2DArray), ``left/image_raw``,
``right/image_raw`` (``images.transport`` raw: sensor_msgs/Image; compressed:
sensor_msgs/CompressedImage on ``left/image_raw/compressed``, ``right/image_raw/compressed``;
none when ``use_images`` is false), ``left/camera_info``, ``right/camera_info`` (unless
calibration files are given).  Outputs (stamped with the input stamp, frame: ``frame_id`` or
the left optical frame): ``~/points``, ``~/markers``, ``~/tracks``, ``~/debug_image``
(``publish.debug_image``), ``~/cameras`` and ``/diagnostics``.  ``~/cameras`` (both cameras'
frusta, ``messages.camera_markers``) is published with the first frame after each
calibration change or restart, transient local (latched), so that a viewer started later
still gets it.

One time base: every output carries the stamp of the input it came from, and
``/diagnostics`` is stamped on the inputs' clock too (``ros.time_base``): with
``use_sim_time`` the latest ``/clock``; without a ``/clock`` (a bag played without
``--clock``) the newest input stamp, and the missing clock is reported (a rate-limited warning
and ``clock.*`` values); before any valid time, no diagnostics are published.
"""

import argparse
from collections import Counter, deque
import gc
import os
import sys
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from persistence_ros import memory
from persistence_ros.calibration import (CalibrationError, CameraInfoMonitor,
                                         load_calibration_yaml, StereoCalibration)
from persistence_ros.detections import (detection_frame_of, DETECTION_TYPES, NANOSECONDS,
                                        stamp_to_ns)
from persistence_ros.filter_factory import build_filter
from persistence_ros.image_codec import decode_compressed, ImageEncodingError, to_rgb8
from persistence_ros.model import auto_torch_threads
from persistence_ros.msg import TrackArray
from persistence_ros.pipeline import PIPELINE_STAGES, StereoPipeline, TIME_JUMP_RESET_NS
from persistence_ros.ros import messages, parameters
from persistence_ros.ros.conversions import (image_to_numpy, message_class, ns_to_stamp,
                                             numpy_to_image)
from persistence_ros.ros.sync import SynchronizedSubscriptions
from persistence_ros.ros.time_base import steady_clock, TimeBase
from persistence_ros.stamp_gate import StampGate, TIME_JUMP_CONFIRM
from persistence_ros.timing import StageTimer

NODE_NAME = 'persistence_node'
# The synchronized inputs, named as in the rate diagnostics; with images.transport compressed
# the images arrive on <side>/image_raw/compressed (image_transport's name) instead.
INPUTS = ('left/detections', 'right/detections', 'left/image_raw', 'right/image_raw')
IMAGE_TOPICS = {'raw': (Image, '{side}/image_raw'),
                'compressed': (CompressedImage, '{side}/image_raw/compressed')}
SPIN_TIMEOUT_S = 0.5
WORKER_JOIN_TIMEOUT_S = 10.0
# raised by rcl calls (rclpy re-exports it only from its own modules, e.g. rclpy.subscription)
RCLError = rclpy_implementation.RCLError
# What the node times around the pipeline (``pipeline.PIPELINE_STAGES`` are timed inside it):
# a set's wait in the synchronizer (first message received -> set complete) and in the
# worker's queue, message -> core conversion, the pipeline (its stages: stage_ms.<stage>),
# building the output messages, publishing them.  /diagnostics: stage_ms.<stage>.p50/p99/max.
NODE_STAGES = ('sync_wait', 'queue_wait', 'conversion', 'pipeline', 'messages', 'publishing')
# frames the stage statistics of /diagnostics cover
TIMING_WINDOW = 300


def _qos(reliability: str, depth: int) -> QoSProfile:
    profile = QoSProfile(depth=int(depth), history=HistoryPolicy.KEEP_LAST,
                         durability=qos_profile_sensor_data.durability)
    profile.reliability = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                           else ReliabilityPolicy.BEST_EFFORT)
    return profile


class PersistenceNode(LifecycleNode):
    """The lifecycle node; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._declare_errors = parameters.declare_parameters(self)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self.settings = parameters.NodeSettings()
        self.calibration: Optional[StereoCalibration] = None
        self.filter = None
        self.pipeline: Optional[StereoPipeline] = None
        self.device = 'cpu'
        self.frame_id = ''
        self._outputs: Dict[str, Any] = {}
        self._sync: Optional[SynchronizedSubscriptions] = None
        self._info_subs: List[Any] = []
        self._infos = CameraInfoMonitor()
        self._timer = None
        self._lock = threading.Lock()
        # Held while a frame runs through the pipeline and while the pipeline is rebuilt
        # (camera_info changed), so a rebuild never resets the filter under a running frame.
        self._pipeline_lock = threading.Lock()
        self._frames: Deque = deque()
        self._wake = threading.Condition(self._lock)
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._markers = messages.MarkerBuilder()
        self._cameras_due = False
        # receive time of each queued input message, by (input, stamp): a set's sync wait
        self._arrivals: Dict[Tuple[int, int], float] = {}
        self._gc_start = 0.0
        self._reset_counters()

    # -- counters --------------------------------------------------------------------------

    def _reset_counters(self) -> None:
        self.received = Counter()
        self._rate_marks = (time.monotonic(), Counter())
        self.rejected: Counter = Counter()
        self.resets: Counter = Counter()   # time_jump, sequence_restart, recalibration
        self.frames_synchronized = 0
        self.time_jumps = 0
        self.frames_processed = 0
        self.queue_drops = 0
        self.publish_errors = 0
        self.latencies_ms: Deque[float] = deque(maxlen=2000)
        self.timer = StageTimer(NODE_STAGES, window=TIMING_WINDOW)
        self.gc_collections = 0
        self.gc_ms = 0.0
        self.e2e_ms: Deque[float] = deque(maxlen=2000)
        self.stamp_age_ms: Deque[float] = deque(maxlen=2000)
        self._period_e2e_max = 0.0
        self._last_warn: Dict[str, float] = {}
        now = time.monotonic()
        self._last_input = None        # monotonic time of the last input message
        self._last_processed = now     # ... of the last processed frame (or the start)
        self._unmatched_seen = 0
        self._marks = (Counter(), Counter(), 0)   # rejected, resets, queue drops at last report
        self._time = TimeBase(self)

    def _on_parameters_set(self, changed) -> None:
        # An override refused at start-up stops failing configure once it is set right.
        for parameter in changed:
            self._declare_errors.pop(parameter.name, None)

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        """Count ``count`` rejected inputs by reason and log it, rate-limited per reason."""
        self.rejected[reason] += count
        self.warn_throttled(reason, f'rejected input ({reason}, {self.rejected[reason]} so '
                            f'far): {detail}')

    def warn_throttled(self, kind: str, text: str) -> None:
        """Log a warning, at most once per ``log.throttle_s`` seconds per ``kind``."""
        now = time.monotonic()
        if now - self._last_warn.get(kind, -1e18) >= self.settings.log.throttle_s:
            self._last_warn[kind] = now
            self.get_logger().warning(text)

    # -- lifecycle -------------------------------------------------------------------------

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        """Validate parameters, load calibration and filter, create publishers."""
        logger = self.get_logger()
        values = parameters.read_parameters(self)
        errors = list(self._declare_errors.values()) + parameters.validate(values)
        settings = parameters.node_settings(values) if not errors else None
        calibration = None
        if not errors and settings.calibration.left_file:
            try:
                calibration = StereoCalibration(
                    load_calibration_yaml(settings.calibration.left_file),
                    load_calibration_yaml(settings.calibration.right_file))
            except (CalibrationError, OSError, ValueError, KeyError) as error:
                errors.append(f'calibration.left_file/right_file: cannot load the stereo '
                              f'calibration: {error}')
        if not errors:
            try:
                self.filter = build_filter(settings)
            except Exception as error:  # noqa: B902 - any loader error becomes a clear FAILURE
                errors.append(f'filter.name={settings.filter.name}: cannot build the filter: '
                              f'{error}')
        if errors:
            for error in errors:
                logger.error(f'configuration error: {error}')
            logger.error('configure FAILED: fix the parameters above (e.g. in the params file '
                         'passed with --ros-args --params-file) and configure again')
            self.filter = None
            return TransitionCallbackReturn.FAILURE
        self.settings = settings
        self.device = getattr(self.filter, 'device', 'cpu')
        self._configure_process(settings)
        if hasattr(self.filter, 'warm_up'):  # the model's first-call cost, not a frame's
            self.filter.warm_up()
        self.frame_id = settings.frame_id
        self.calibration = calibration
        self.pipeline = None
        self._infos = CameraInfoMonitor()
        if calibration is not None:
            self._build_pipeline(calibration)
        self._markers = messages.MarkerBuilder(history=settings.publish.marker_history,
                                               faint_transient=settings.publish.faint_transient)
        self._reset_counters()
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._outputs = {
            'points': self.create_publisher(PointCloud2, '~/points', reliable),
            'markers': self.create_publisher(MarkerArray, '~/markers', reliable),
            'tracks': self.create_publisher(TrackArray, '~/tracks', reliable),
            'diagnostics': self.create_publisher(DiagnosticArray, '/diagnostics', reliable),
            # latched: published once per calibration, a late subscriber still gets it
            'cameras': self.create_publisher(MarkerArray, '~/cameras', QoSProfile(
                depth=1, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL)),
        }
        if settings.publish.debug_image:
            self._outputs['debug_image'] = self.create_publisher(
                Image, '~/debug_image', reliable)
        logger.info(f'configured: filter {settings.filter.name}, device {self.device}, '
                    'calibration ' + ('from files' if calibration is not None
                                      else 'from camera_info topics'))
        return TransitionCallbackReturn.SUCCESS

    def _configure_process(self, settings) -> None:
        """
        Set the model's CPU threads and malloc's mmap threshold; keep configure's objects from gc.

        torch is set only when a filter loaded it.  ``gc.freeze``: the model and the modules
        loaded so far live as long as the node, and a full collection no longer walks them
        (such collections were the spikes of up to ~20 ms measured in a frame).  Cleanup,
        shutdown and ``destroy_node`` unfreeze them (``_unfreeze``).
        """
        threshold = settings.processing.malloc_mmap_threshold_bytes
        if memory.set_mmap_threshold(threshold):
            self.get_logger().info(f'malloc: blocks of {threshold} bytes and more are mapped '
                                   'and returned when freed')
        torch = sys.modules.get('torch')
        if torch is not None:
            threads = (settings.processing.torch_threads
                       or auto_torch_threads())
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            self.get_logger().info(f'model CPU threads: {threads}')
        gc.collect()
        gc.freeze()

    def _on_gc(self, phase: str, info) -> None:
        """Count full collections and their time (``gc.callbacks``)."""
        if info.get('generation') != 2:
            return
        if phase == 'start':
            self._gc_start = time.perf_counter()
        else:
            self.gc_collections += 1
            self.gc_ms += 1e3 * (time.perf_counter() - self._gc_start)

    def _build_pipeline(self, calibration: StereoCalibration) -> None:
        self.pipeline = StereoPipeline(calibration, self.settings, self.filter,
                                       timer=StageTimer(PIPELINE_STAGES, window=TIMING_WINDOW))
        self._cameras_due = True

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Subscribe and start the worker thread."""
        if self._worker is not None and self._worker.is_alive():
            self.get_logger().error('activate FAILED: the previous worker is still processing '
                                    'a frame; deactivate and activate again later')
            return TransitionCallbackReturn.FAILURE
        v = self.settings
        det_qos = _qos(v.qos.detections.reliability, v.qos.detections.depth)
        img_qos = _qos(v.qos.images.reliability, v.qos.images.depth)
        detections = message_class(DETECTION_TYPES[v.detections.type])
        inputs = [(detections, 'left/detections', det_qos),
                  (detections, 'right/detections', det_qos)]
        if v.use_images:
            image, topic = IMAGE_TOPICS[v.images.transport]
            inputs += [(image, topic.format(side=side), img_qos) for side in ('left', 'right')]
        gate = StampGate(len(inputs), TIME_JUMP_RESET_NS,
                         max_ahead_ns=int(v.pipeline.max_stamp_ahead_s * NANOSECONDS),
                         capacity=max(v.sync.queue_size, TIME_JUMP_CONFIRM))
        self._sync = SynchronizedSubscriptions(
            self, inputs, v.sync.queue_size, v.sync.slop, self._on_synchronized,
            on_receive=self._on_receive, gate=gate, on_time_jump=self._on_time_jump,
            on_rejected=self._on_stamp_rejected, now_ns=self._now_ns,
            max_bytes=[v.detections.max_message_bytes] * 2 + [None] * (len(inputs) - 2),
            on_too_large=self._on_too_large)
        self._last_processed = time.monotonic()
        if not v.calibration.left_file:  # watch camera_info, also after a re-activate
            info_qos = _qos(v.qos.camera_info.reliability, v.qos.camera_info.depth)
            self._info_subs = [
                self.create_subscription(CameraInfo, f'{side}/camera_info',
                                         lambda msg, side=side: self._on_camera_info(side, msg),
                                         info_qos)
                for side in ('left', 'right')]
        self._running = True
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self._worker = threading.Thread(target=self._work, name='persistence_worker',
                                        daemon=True)
        self._worker.start()
        # steady clock: on simulated time the timer would never fire without /clock
        self._timer = self.create_timer(v.diagnostics.period, self._publish_diagnostics,
                                        clock=steady_clock())
        self.get_logger().info(f'active: synchronizer {self._sync.backend}, inputs '
                               + ', '.join(topic for _, topic, _ in inputs))
        return super().on_activate(state)

    def _stop(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None
        for sub in self._info_subs:
            self.destroy_subscription(sub)
        self._info_subs = []
        with self._wake:
            self._running = False
            self._frames.clear()
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
            if not self._worker.is_alive():
                self._worker = None
            else:  # kept, so that activate does not start a second worker beside it
                self.get_logger().error(f'the worker is still processing a frame after '
                                        f'{WORKER_JOIN_TIMEOUT_S:.0f} s')

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker."""
        self._stop()
        return super().on_deactivate(state)

    @staticmethod
    def _unfreeze() -> None:
        """
        Undo configure's ``gc.freeze`` so that what it froze can be collected and finalized.

        Frozen objects are never finalized, not even at interpreter exit: the rclpy context
        that configure froze then outlived the process's end, its Fast DDS participant was
        never deleted, and every run of the node left its shared-memory segments (35 MB with
        config/fastdds.xml) in /dev/shm, RAM that only a reboot or ``fastdds shm clean``
        frees (docs/benchmarks.md, "Shared memory left in /dev/shm").
        """
        gc.unfreeze()

    def destroy_node(self) -> None:
        """Destroy the node after undoing configure's ``gc.freeze``."""
        self._unfreeze()
        super().destroy_node()

    def _release(self) -> None:
        self._unfreeze()
        for pub in self._outputs.values():
            self.destroy_publisher(pub)
        self._outputs = {}
        self.pipeline = None
        self.filter = None
        self.calibration = None
        self._infos = CameraInfoMonitor()
        self._markers.reset()
        if self.device == 'cuda':
            try:
                import torch
                torch.cuda.empty_cache()
            except ImportError:
                pass

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        """Release publishers, the pipeline and the model."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """Stop everything."""
        self._stop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # -- inputs ----------------------------------------------------------------------------

    def _now_ns(self) -> int:
        """Return the node's clock (sim time: 0 until /clock arrives, i.e. unknown)."""
        return self.get_clock().now().nanoseconds

    def _on_receive(self, index: int, msg=None) -> None:
        self.received[INPUTS[index]] += 1
        self._last_input = time.monotonic()
        if index >= 2 and isinstance(msg, Image):   # its size, for the camera_info check
            with self._lock:
                self._infos.observe_image(('left', 'right')[index - 2], msg.width, msg.height)
        if msg is not None:
            self._arrivals[(index, stamp_to_ns(msg.header.stamp))] = time.perf_counter()
            while len(self._arrivals) > 64 * len(INPUTS):  # sets that never formed
                del self._arrivals[next(iter(self._arrivals))]

    def _sync_wait(self, msgs) -> float:
        """Return seconds from a set's first message received to now (0 if unknown)."""
        now = time.perf_counter()
        times = [self._arrivals.pop((i, stamp_to_ns(m.header.stamp)), now)
                 for i, m in enumerate(msgs)]
        return now - min(times) if times else 0.0

    def _on_too_large(self, index: int, size: int, limit: int) -> None:
        self.reject('message_too_large', f'{INPUTS[index]}: {size} bytes, more than '
                    f'detections.max_message_bytes ({limit}): refused before it was read')

    def _on_stamp_rejected(self, reasons: Dict[str, int], index: int, msg) -> None:
        for reason, count in sorted(reasons.items()):
            self.reject(reason, f'{INPUTS[index]} stamped {stamp_to_ns(msg.header.stamp)} ns '
                        f'(node clock {self._now_ns()} ns): not synchronized '
                        '(stamp_gate.STAMP_REJECTIONS)', count)

    def _on_time_jump(self, dropped: int, jump_ns: int) -> None:
        self.time_jumps += 1
        self.resets['time_jump'] += 1
        self.get_logger().warning(
            f'every input jumped back by {-jump_ns / 1e9:.2f} s: new sequence, dropped '
            f'{dropped} queued message(s) of the old one')

    def _on_camera_info(self, side: str, msg) -> None:
        self.received[f'{side}/camera_info'] += 1
        self._time.saw_input(stamp_to_ns(msg.header.stamp))
        with self._lock:
            update = self._infos.offer(side, msg)
            current = self.calibration
        if update.reason:
            self.reject(update.reason, update.detail)
        stereo = update.calibration
        if stereo is None:
            return
        with self._pipeline_lock, self._lock:
            if current is not None:
                self.resets['recalibration'] += 1
                self.get_logger().warning('camera_info changed and stayed so: new calibration, '
                                          'restarting the pipeline')
                self._publish('markers', self._markers.delete_all(
                    stamp_to_ns(msg.header.stamp), self.frame_id or current.left.frame_id))
            self.calibration = stereo
            self._build_pipeline(stereo)
        self.get_logger().info(f'calibration from camera_info: baseline '
                               f'{stereo.baseline_m:.4f} m')

    def _on_synchronized(self, *msgs) -> None:
        # Only enqueue: the worker thread does the work (bounded queue, oldest dropped).
        self._time.saw_input(stamp_to_ns(msgs[0].header.stamp))
        sync_wait = self._sync_wait(msgs)
        with self._wake:
            self.frames_synchronized += 1
            if len(self._frames) >= self.settings.processing.queue_size:
                self._frames.popleft()
                self.queue_drops += 1
                dropped = True
            else:
                dropped = False
            self._frames.append((time.perf_counter(), sync_wait, msgs))
            self._wake.notify()
        if dropped:
            self.reject('processing_queue_full',
                        'the worker is slower than the input: dropped the oldest frame '
                        '(raise processing.queue_size or lower the input rate)')

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._frames:
                    self._wake.wait(0.5)
                if not self._running:
                    return
                synchronized, sync_wait, msgs = self._frames.popleft()
            try:
                waits = (sync_wait, time.perf_counter() - synchronized)
                if self.process(*msgs, waits=waits) is not None:
                    self._record_e2e(synchronized, msgs[0])
            except Exception as error:  # noqa: B902 - never let one frame kill the node
                self.reject('processing_error', f'{type(error).__name__}: {error}')

    def _record_e2e(self, synchronized: float, left_msg) -> None:
        """Record end-to-end latency: synchronized -> published, and input stamp -> now."""
        e2e = 1e3 * (time.perf_counter() - synchronized)
        self.e2e_ms.append(e2e)
        self._period_e2e_max = max(self._period_e2e_max, e2e)
        now = self._now_ns()
        if now:
            self.stamp_age_ms.append(1e-6 * (now - stamp_to_ns(left_msg.header.stamp)))

    # -- per frame -------------------------------------------------------------------------

    def _image(self, msg, side: str) -> Optional[np.ndarray]:
        """
        Return an Image or CompressedImage message as RGB, None if it cannot be read.

        A refused image is counted by its reason (``image_codec.IMAGE_REJECTIONS``:
        ``unsupported_image``, ``bad_image_layout``, ``corrupt_image`` for compressed data
        that does not decode).  A compressed image's size, known once decoded, feeds the
        camera_info check as a raw image's does on arrival.
        """
        try:
            if isinstance(msg, CompressedImage):
                rgb = decode_compressed(msg.format, msg.data)
                with self._lock:
                    self._infos.observe_image(side, rgb.shape[1], rgb.shape[0])
                return rgb
            return to_rgb8(image_to_numpy(msg), msg.encoding)
        except ImageEncodingError as error:
            self.reject(error.reason, f'{side} image: {error}')
            return None

    def process(self, left_msg, right_msg, left_image_msg=None, right_image_msg=None,
                waits: Tuple[float, float] = (0.0, 0.0)):
        """
        Process one synchronized set; return the PipelineFrameResult or None if rejected.

        ``waits``: seconds the set waited in the synchronizer and in the worker's queue.
        """
        with self._pipeline_lock:
            self.timer.start()
            self.timer.add('sync_wait', waits[0])
            self.timer.add('queue_wait', waits[1])
            result = self._process(left_msg, right_msg, left_image_msg, right_image_msg)
            if result is None:
                self.timer.cancel()
            else:
                self.timer.finish()
            return result

    def _process(self, left_msg, right_msg, left_image_msg, right_image_msg):
        """Convert the messages, run the pipeline (every input rule), count, publish."""
        start = time.perf_counter()
        with self._lock:
            pipeline = self.pipeline
        if pipeline is None:
            self.reject('no_calibration', 'no calibration yet: waiting for left/camera_info and '
                        'right/camera_info (or set calibration.left_file/right_file)')
            return None
        msgtype = DETECTION_TYPES[self.settings.detections.type]
        converted: Counter = Counter()
        left = detection_frame_of(left_msg, msgtype, converted)
        right = detection_frame_of(right_msg, msgtype, converted)
        for reason, count in sorted(converted.items()):  # detections.VISION_MSGS_REJECTIONS
            self.reject(reason, f'{count} detection(s) at stamp {left.stamp_ns} dropped: '
                        'a vision_msgs Detection2D without results (no class hypothesis)',
                        count)
        left_rgb = right_rgb = image_frame_ids = None
        if left_image_msg is not None:
            left_rgb = self._image(left_image_msg, 'left')
            right_rgb = self._image(right_image_msg, 'right')
            if left_rgb is None or right_rgb is None:
                return None
            image_frame_ids = (left_image_msg.header.frame_id, right_image_msg.header.frame_id)
        self.timer.lap('conversion')
        result = pipeline.process(left, right, left_rgb, right_rgb, image_frame_ids)
        self.timer.lap('pipeline')
        for reason, count in sorted(result.rejected_detections.items()):
            self.reject(reason, f'{count} detection(s) at stamp {left.stamp_ns} dropped '
                        '(pipeline.DETECTION_REJECTIONS)', count)
        for reason, count in sorted(result.rejected_tracks.items()):
            self.reject(reason, f'{count} track(s) not started at stamp {left.stamp_ns}: the '
                        'bound is reached (pipeline.TRACK_REJECTIONS)', count)
        if not result.accepted:  # the pipeline names every refusal (FRAME_REJECTIONS)
            self.reject(result.reason, result.detail)
            return None
        if result.restarted:
            self.resets['sequence_restart'] += 1
            self.get_logger().warning('input time jumped back: started a new sequence')
            self._publish('markers', self._markers.delete_all(
                result.stamp_ns, self.frame_id or result.frame_id))
            self._cameras_due = True   # stamped within the new sequence
        self.publish(result, left_rgb, pipeline)
        self.frames_processed += 1
        self._last_processed = time.monotonic()
        self.latencies_ms.append(1e3 * (time.perf_counter() - start))
        return result

    def _publish(self, name: str, msg) -> None:
        publisher = self._outputs.get(name)
        if publisher is None:
            return
        try:
            publisher.publish(msg)
        except Exception as error:  # noqa: B902 - rclpy raises RCLError when readers lag
            self.publish_errors += 1
            self.reject('publish_error', f'{name}: {error}')

    def publish(self, result, left_rgb=None, pipeline=None) -> None:
        """Build the output messages of one PipelineFrameResult, then publish them."""
        frame_id = self.frame_id or result.frame_id
        outputs = []
        if self._cameras_due and pipeline is not None:
            # stamped with this frame (not the camera_info's stamp, which may be 0), so that a
            # recording's time span stays the input's
            outputs.append(('cameras', messages.camera_markers(pipeline.calibration,
                                                               result.stamp_ns, frame_id)))
            self._cameras_due = False
        outputs.append(('points', messages.points_cloud(result, frame_id)))
        markers = self._markers.update(result, frame_id)
        if markers.markers:   # an empty array changes nothing and carries no stamp to record
            outputs.append(('markers', markers))
        if 'debug_image' in self._outputs and left_rgb is not None and pipeline is not None:
            boxes = {t.id: tuple(t.box) for t in pipeline.left_tracker.tracks}
            image = messages.debug_image(left_rgb, result, boxes)
            outputs.append(('debug_image', numpy_to_image(image, 'rgb8', result.stamp_ns,
                                                          frame_id)))
        # Tracks last: a replay with back-pressure waits for them to send the next frame.
        outputs.append(('tracks', messages.track_array(result, frame_id)))
        self.timer.lap('messages')
        for name, msg in outputs:
            self._publish(name, msg)
        self.timer.lap('publishing')

    # -- diagnostics -----------------------------------------------------------------------

    def diagnostic_values(self) -> Dict[str, Any]:
        """Return the counters reported on /diagnostics (rates: since the last call)."""
        now = time.monotonic()
        then, counts = self._rate_marks
        dt = max(now - then, 1e-9)
        values: Dict[str, Any] = {}
        for topic in INPUTS + ('left/camera_info', 'right/camera_info'):
            values[f'rate_hz.{topic}'] = (self.received[topic] - counts[topic]) / dt
        self._rate_marks = (now, Counter(self.received))
        sync = self._sync
        if sync is not None:   # messages that left a queue unmatched since the last call
            unmatched = sync.unmatched()
            if unmatched > self._unmatched_seen:
                self.reject('sync_unmatched', f'{unmatched - self._unmatched_seen} input '
                            'message(s) found no partner within sync.slop and left the '
                            'synchronizer queue (stamps of the inputs disagree?)',
                            unmatched - self._unmatched_seen)
            self._unmatched_seen = unmatched
        values['sync.sets'] = self.frames_synchronized
        values['sync.unmatched_messages'] = self._unmatched_seen
        values['sync.pending'] = sync.pending() if sync is not None else 0
        values['sync.held'] = sync.gate.held if sync is not None and sync.gate else 0
        values['sync.backend'] = sync.backend if sync is not None else ''
        values['sync.time_jumps'] = self.time_jumps
        values['queue.drops'] = self.queue_drops
        values['queue.length'] = len(self._frames)
        values['frames.processed'] = self.frames_processed
        for kind in ('time_jump', 'sequence_restart', 'recalibration'):
            values[f'resets.{kind}'] = self.resets[kind]
        for reason, count in sorted(self.rejected.items()):
            values[f'rejected.{reason}'] = count
        for name, samples in (('latency_ms', self.latencies_ms), ('latency_e2e_ms', self.e2e_ms),
                              ('stamp_age_ms', self.stamp_age_ms)):
            if samples:
                lat = np.asarray(samples)
                values[f'{name}.p50'] = float(np.percentile(lat, 50))
                values[f'{name}.p99'] = float(np.percentile(lat, 99))
        values['latency_e2e_ms.max_last_period'] = self._period_e2e_max
        self._period_e2e_max = 0.0
        values.update(self.stage_values())
        values['gc.full_collections'] = self.gc_collections
        values['gc.full_collections_ms'] = self.gc_ms
        pipeline = self.pipeline
        if pipeline is not None:
            values['tracks.left'] = len(pipeline.left_tracker.tracks)
            values['tracks.right'] = len(pipeline.right_tracker.tracks)
            values['tracks.stereo'] = len(pipeline.associator.pairs)
        values['device'] = self.device
        values['filter'] = self.settings.filter.name
        if self.filter is not None:
            for key, value in self.filter.diagnostics().items():
                values[f'filter.{key}'] = value
        values['calibrated'] = pipeline is not None
        return values

    def stage_values(self) -> Dict[str, float]:
        """
        Return ``stage_ms.<stage>.p50/p99/max`` over the last ``TIMING_WINDOW`` frames.

        The node's stages (``NODE_STAGES``; ``total``: their sum, the set's wait included)
        and the pipeline's (``pipeline.PIPELINE_STAGES``, whose sum is the node's
        ``pipeline``).
        """
        values: Dict[str, float] = {}
        pipeline = self.pipeline
        summaries = [self.timer.summary()]
        if pipeline is not None:
            summaries.append({name: row for name, row in pipeline.timer.summary().items()
                              if name != 'total'})
        for summary in summaries:
            for stage, row in summary.items():
                for stat, value in row.items():
                    values[f'stage_ms.{stage}.{stat}'] = value
        return values

    def diagnostic_status(self, values: Dict[str, Any]):
        """
        Return (level, message) of the period since the last call.

        ERROR: no frame processed for ``diagnostics.stall_timeout_s`` while inputs arrive;
        WARN: anything refused or dropped (by reason), a reset or rebuild, no calibration.
        """
        now = time.monotonic()
        rejected, resets, drops = self._marks
        self._marks = (Counter(self.rejected), Counter(self.resets), self.queue_drops)
        new_rejected = self.rejected - rejected
        new_resets = self.resets - resets
        problems = []
        if self.pipeline is None:
            problems.append('waiting for calibration')
        elif values.get('filter.domain') == 'outside':
            domain = ('the learned filter is out of its training domain: '
                      f"{values['filter.domain.reasons']}; the fallback rule "
                      f"{values['filter.domain.fallback']!r} decides")
            if domain not in self._last_warn:  # said once in the log, always in diagnostics
                self._last_warn[domain] = time.monotonic()
                self.get_logger().warning(domain)
            problems.append(domain)
        if values.get('clock.source') == 'input':
            problems.append('use_sim_time without /clock: stamped with the newest input '
                            '(see clock.*)')
        if self.queue_drops > drops:
            problems.append(f'{self.queue_drops - drops} frame(s) dropped (worker too slow)')
        problems += [f'{reason} x{count}' for reason, count in sorted(new_rejected.items())
                     if reason != 'processing_queue_full']
        problems += [f'reset: {kind} x{count}' for kind, count in sorted(new_resets.items())]
        stall = self.settings.diagnostics.stall_timeout_s
        idle = now - self._last_processed
        if self._last_input is not None and now - self._last_input < stall and idle > stall:
            return DiagnosticStatus.ERROR, '; '.join(
                [f'no frame processed for {idle:.1f} s while inputs arrive'] + problems)
        if problems:
            return DiagnosticStatus.WARN, '; '.join(problems)
        return DiagnosticStatus.OK, 'ok'

    def _publish_diagnostics(self) -> None:
        """Publish /diagnostics stamped on the inputs' clock (``ros.time_base``)."""
        stamp_ns, source = self._time.stamp_ns()
        if stamp_ns is None:  # no /clock and no input yet: a 1970 stamp would mislead
            return
        if source == 'input':
            self.warn_throttled('clock', 'use_sim_time is true but inputs arrive without a '
                                '/clock: diagnostics are stamped with the newest input stamp; '
                                'play bags with --clock (ros2 bag play --clock) or set '
                                'use_sim_time to false')
        memory.malloc_trim()   # return what a flood freed
        values = self.diagnostic_values()
        values.update(self._time.values(source))
        level, message = self.diagnostic_status(values)
        name, hardware_id = self.diagnostic_status_id()
        self._publish('diagnostics', messages.diagnostics(
            ns_to_stamp(stamp_ns), name, hardware_id, values, level, message))

    def diagnostic_status_id(self):
        """Return the (name, hardware_id) of the node's status in /diagnostics."""
        return f'{self.get_name()}: pipeline', self.get_fully_qualified_name()


def spin_once_unless_shut_down(executor: Executor, timeout_sec: float) -> bool:
    """
    Run one ``executor.spin_once``; return False if the context was shut down meanwhile.

    A signal can shut the context down between the caller's ``rclpy.ok()`` and the wait set
    ``spin_once`` builds, which then raises RCLError ("the given context is not valid"; a
    replay's SIGTERM once made the node exit 1 that way): that is a normal stop. Any other
    error, or one while the context is still valid, is raised.
    """
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except RCLError:
        if executor.context.ok():
            raise
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Run the node (configure + activate unless --managed); return the exit status."""
    argv = sys.argv if argv is None else list(argv)
    # With several model threads, idle OpenMP threads sleep instead of spinning: spinning
    # threads fought the node's other threads for 2 cores (a model step took 30 to 100
    # times longer under load, docs/benchmarks.md).  Read once, when torch loads.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    rclpy.init(args=argv)
    parser = argparse.ArgumentParser(prog=NODE_NAME, description=__doc__.splitlines()[1])
    parser.add_argument('--managed', action='store_true',
                        help='do not configure/activate: a lifecycle manager drives the node')
    args = parser.parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    node = PersistenceNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    status = 0
    try:
        if not args.managed:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal('configure failed (see the errors above)')
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal('activate failed')
                return 1
        # Bounded waits instead of executor.spin(): a replay under load once caught the node
        # still waiting for callbacks 15 s after SIGTERM (a missed wake-up); with a timeout
        # the loop re-checks the context twice a second.
        while rclpy.ok() and spin_once_unless_shut_down(executor, SPIN_TIMEOUT_S):
            pass
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop()
        node._release()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == '__main__':
    sys.exit(main())
