"""
The node's outputs in a real viewer: Foxglove Studio in headless Chromium (issue 21).

A short simulated scene is replayed through persistence_node (``persistence_ros.ros.replay``,
``publish.debug_image`` on). ``test/viewer/screenshot.js`` serves the recorded MCAP on
127.0.0.1 (HTTP Range, as the remote-file source reads it), opens it in Foxglove Studio
(``@foxglove/studio-base`` 1.48.0, pinned by ``test/viewer/package-lock.json``) in Debian's
chromium with the shipped layout (``config/foxglove_layout.json``), seeks to the last frame
and takes one screenshot. From the screenshot: the point cloud, the trajectories, the camera
frusta (pixels of their colours in the 3D panel) and the debug image (the recorded image,
found in the image panel) are drawn; from the page: the timeline is as long as the bag.

Needs chromium, node and the npm packages of test/viewer; ``make test`` installs them
(scripts/install-system-deps.sh, ``npm ci``). Without them this test fails: it never skips.
``VIEWER_SCREENSHOT=PATH`` keeps the screenshot (docs/viewer.png is one).
"""

import json
import os
from pathlib import Path
import shutil
import subprocess
import time

import cv2
import numpy as np
import pytest
from visualization_msgs.msg import Marker

from persistence_ros.bag_io import read_messages
from persistence_ros.detections import stamp_to_ns
from persistence_ros.ros import messages
from persistence_ros.ros.replay import read_frames, replay
from persistence_ros.stereo_track import TrackState

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
VIEWER = ROOT / 'test' / 'viewer'
LAYOUT = ROOT / 'config' / 'foxglove_layout.json'
CHROMIUM = Path('/usr/lib/chromium/chromium')   # Debian's chromium (the /usr/bin one is a script)
SETUP_HINT = 'run `make test` (or scripts/install-system-deps.sh and `make viewer-setup`)'
N_FRAMES = 45   # 3 s at 15 Hz: trajectories long enough to see
VIEWPORT = (1920, 1080)
TOOLBAR_PX = 30   # a panel's title bar
# Pixels of one colour that count as "drawn" (a point of the layout's 14 px is ~150 pixels,
# a 1 m line ~100); the empty scene has none of these colours.
MIN_PIXELS = {'points': 40, 'trajectory': 40, 'frusta': 300}


def _rfc3339(stamp_ns: int) -> str:
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec)) + f'.{nsec:09d}Z'


def _duration_s(text: str) -> float:
    """Return seconds of Foxglove's duration text ``h:mm:ss.SSS`` (hours may have commas)."""
    hours, minutes, seconds = text.replace(',', '').split(':')
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def _node_and_chromium():
    node = shutil.which('node')
    missing = [what for what, ok in (
        ('node (Node.js)', node is not None),
        (f'chromium ({CHROMIUM})', CHROMIUM.is_file()),
        ('the npm packages (test/viewer/node_modules)',
         (VIEWER / 'node_modules' / '@foxglove' / 'studio-base' / 'assets' / 'index.js').is_file()
         and (VIEWER / 'node_modules' / 'puppeteer-core').is_dir()))
        if not ok]
    assert not missing, f'the viewer test needs {", ".join(missing)}: {SETUP_HINT}'
    return node


@pytest.fixture(scope='module')
def viewer(tmp_path_factory):
    """Replay a scene, open the recording in Foxglove Studio; return what the page showed."""
    node = _node_and_chromium()   # before the minute of replay: fail fast when missing
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    folder = tmp_path_factory.mktemp('viewer')
    scene = folder / 'scene'
    generate_scene(load_scenario('reflective_floor', overrides={
        'duration_s': N_FRAMES / 15.0, 'fps': 15.0}), scene)
    run = folder / 'run'
    with open(folder / 'node.log', 'w+') as log:
        summary = replay(scene, run, mode='fast', frame_timeout=30.0, node_log=log,
                         extra_node_args=['-p', 'publish.debug_image:=true'])
        log.seek(0)
        assert summary['node_exit_code'] in (0, -15) and summary['timeouts'] == 0, log.read()
    _, frames = read_frames(scene, '/stereo')
    stamps = [stamp for stamp, _ in frames]
    shot = folder / 'viewer.png'
    result = subprocess.run(
        [node, str(VIEWER / 'screenshot.js'), '--bag', str(run / 'run.mcap'),
         '--layout', str(LAYOUT), '--out', str(shot), '--time', _rfc3339(stamps[-1]),
         '--chromium', str(CHROMIUM), '--width', str(VIEWPORT[0]),
         '--height', str(VIEWPORT[1]), '--settle', '6'],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    if os.environ.get('VIEWER_SCREENSHOT'):
        shutil.copyfile(shot, os.environ['VIEWER_SCREENSHOT'])
    recorded = {}
    for topic, _, msg in read_messages(run):
        recorded.setdefault(topic.rsplit('/', 1)[-1], []).append(msg)
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
    return {'page': page, 'image': image, 'shot': shot, 'stamps': stamps,
            'recorded': recorded}


def _panel(viewer, prefix, toolbar=TOOLBAR_PX, right=0):
    """Return the pixels of the panel whose id starts with ``prefix`` (without its toolbar)."""
    (rect,) = [r for k, r in viewer['page']['panels'].items() if k.startswith(prefix)]
    x0, y0 = int(np.ceil(rect['x'])), int(np.ceil(rect['y'])) + toolbar
    x1, y1 = int(rect['x'] + rect['width']) - right, int(rect['y'] + rect['height'])
    return viewer['image'][y0:y1, x0:x1]


def _count(pixels, rgb, tolerance=12):
    """Return how many pixels are within ``tolerance`` (per channel, 0..255) of ``rgb``."""
    target = np.array([round(255 * c) for c in rgb[:3]])
    return int((np.abs(pixels.astype(int) - target).max(axis=2) <= tolerance).sum())


def test_viewer_loads_the_recording_from_127_0_0_1_only(viewer):
    page = viewer['page']
    assert page['hostError'] is None
    assert page['outside_requests'] == []
    assert page['range_requests'] > 0   # the bag was read in ranges
    assert page['failed_requests'] == []
    # every message decoded, no player problem (a 57-year timeline logged one)
    assert page['errors'] == []
    panels = {k.split('!')[0] for k in page['panels']}
    assert panels == {'3D', 'ImageViewPanel', 'DiagnosticStatusPanel'}


def test_viewer_draws_points_trajectories_and_camera_frusta(viewer):
    # the 3D panel's own buttons (top right, white icons) are left out
    scene = _panel(viewer, '3D!', right=60)
    # the markers of the frame shown (the last one)
    (last,) = [msg.markers for msg in viewer['recorded']['markers']
               if msg.markers and stamp_to_ns(msg.markers[0].header.stamp)
               == viewer['stamps'][-1]]
    opaque = {messages.track_colour(m.id) for m in last
              if m.ns == 'trajectory' and m.action == Marker.ADD and m.color.a == 1.0}
    assert opaque, 'the last frame has no opaque trajectory: pick another scene'
    counts = {
        'points': _count(scene, (1.0, 1.0, 1.0), tolerance=8),   # the layout's flat white
        'frusta': _count(scene, messages.CAMERA_COLOUR),
        'trajectory': sum(_count(scene, colour) for colour in opaque),
    }
    (points,) = [msg for msg in viewer['recorded']['points']
                 if stamp_to_ns(msg.header.stamp) == viewer['stamps'][-1]]
    assert points.width > 0
    for what, count in counts.items():
        assert count >= MIN_PIXELS[what], (what, counts, str(viewer['shot']))
    # every opaque trajectory of the last frame is drawn in its own colour
    for colour in opaque:
        assert _count(scene, colour) >= MIN_PIXELS['trajectory'] // 4, (colour, counts)


def test_viewer_draws_the_debug_image(viewer):
    panel = _panel(viewer, 'ImageViewPanel!')
    (msg,) = [msg for msg in viewer['recorded']['debug_image']
              if stamp_to_ns(msg.header.stamp) == viewer['stamps'][-1]]
    recorded = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
    # the panel fits the image ("fit" in the layout): find it at that scale
    scale = min(panel.shape[1] / msg.width, panel.shape[0] / msg.height)
    expected = cv2.resize(recorded, (int(msg.width * scale), int(msg.height * scale)),
                          interpolation=cv2.INTER_AREA)
    match = cv2.matchTemplate(panel, expected, cv2.TM_CCOEFF_NORMED).max()
    assert match > 0.9, (match, str(viewer['shot']))
    # with the boxes of the persistent tracks
    assert _count(panel, messages.STATE_COLOURS[TrackState.PERSISTENT], 30) > 50


def test_viewer_timeline_is_as_long_as_the_bag(viewer):
    stamps = viewer['stamps']
    source = viewer['page']['source']
    assert set(source) == {'Start time', 'End time', 'Duration'}, source
    shown = _duration_s(source['Duration'])
    # the page shows milliseconds
    assert shown == pytest.approx((stamps[-1] - stamps[0]) / 1e9, abs=1.5e-3), source
