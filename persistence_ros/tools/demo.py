"""
The main job behind ``make demo``: simulate, run, evaluate, and write a report a person reads.

Steps (each printed as it runs):

1. render a ``mixed_hard`` scene (held-out seed) to a rosbag2 + truth.json;
2. if ROS 2 is importable, replay the bag over DDS through ``persistence_node`` and score the
   ``TrackArray`` it published (the ``persistence-ros replay`` subprocess);
3. run the core pipeline with every available filter on the same bag and score each;
4. write ``report.md`` with the metrics table and PNG figures: 3D trajectories kept, filtered
   and true; attention over frames for a few tracks; a left image with boxes coloured by
   decision.
"""

import argparse
import importlib.util
import json
import os
from pathlib import Path
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from persistence_ros import __version__
from persistence_ros.evaluation.command import run_filters_on_frames, summary_table
from persistence_ros.evaluation.runner import evaluate_bag
from persistence_ros.evaluation.scoring import score_run, Truth
from persistence_ros.model import DEFAULT_WEIGHTS, GBDT_BASELINE
from persistence_ros.offline_runner import read_stereo_bag, Run, StereoFrame
from persistence_ros.overrides import replace_fields
from persistence_ros.settings import FILTER_NAMES, Settings
from persistence_ros.simulation.generate import generate_scene
from persistence_ros.simulation.scenario import file_name, load_scenario, ScenarioError
from persistence_ros.stereo_track import TrackState

STATE_COLOURS = {TrackState.PERSISTENT: '#1a9850', TrackState.TRANSIENT: '#d73027',
                 TrackState.TENTATIVE: '#fdae61'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options."""
    parser.add_argument('--out', default='demo_output',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--scenario', default='mixed_hard', help='preset or scenario YAML')
    parser.add_argument('--seed', type=int, default=1000,
                        help='scene seed; 1000-1009 are held out from training (default 1000)')
    parser.add_argument('--duration', type=float, default=None, help='override duration_s')
    parser.add_argument('--no-replay', action='store_true',
                        help='skip the replay through the ROS node')


def _say(message: str) -> None:
    print(f'[demo] {message}', flush=True)


def available_filters() -> List[str]:
    """
    Return the filters that run with the node's defaults (learned when weights are shipped).

    ``ground_plane`` needs a floor plane, which the node does not have by default: left out.
    """
    names = [name for name in FILTER_NAMES if name not in ('learned', 'gbdt', 'ground_plane')]
    if GBDT_BASELINE.exists():
        names.append('gbdt')
    if DEFAULT_WEIGHTS.exists():
        names.append('learned')
    return names


def replay_through_node(scene: Path, out: Path) -> Optional[Path]:
    """Replay the scene through persistence_node (subprocess); return the recorded bag."""
    if importlib.util.find_spec('rclpy') is None or \
            importlib.util.find_spec('persistence_ros.ros.replay') is None:
        _say('replay skipped: ROS 2 (rclpy) or the replay command is not installed here')
        return None
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    command = [sys.executable, '-m', 'persistence_ros', 'replay', str(scene.resolve()),
               '--out', str(out.resolve()), '--mode', 'fast']
    _say('replaying through persistence_node: ' + ' '.join(command))
    # run from the output folder: from a source checkout, ``-m`` would import the source tree
    # (without the generated messages) instead of the installed package
    result = subprocess.run(command, env=env, text=True, capture_output=True, timeout=900,
                            cwd=str(out.resolve().parent))
    if result.returncode != 0:
        _say(f'replay failed (exit {result.returncode}); the core pipeline results follow. '
             f'Output:\n{result.stdout[-2000:]}{result.stderr[-2000:]}')
        return None
    return out


def _plot_trajectories(run_all: Run, decided: Run, truth: Truth, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    final_state: Dict[int, TrackState] = {}
    for _, tracks in decided:
        for track in tracks:
            final_state[track.id] = track.state
    points: Dict[int, List[np.ndarray]] = {}
    for _, tracks in run_all:
        for track in tracks:
            if track.position is not None:
                points.setdefault(track.id, []).append(track.position)
    fig = plt.figure(figsize=(12, 5))
    for index, (elev, azim, title) in enumerate([(20, -70, 'perspective'),
                                                 (89, -90, 'top view (x right, z forward)')]):
        ax = fig.add_subplot(1, 2, index + 1, projection='3d')
        for object_id, states in truth.data['objects'].items():
            xyz = np.array([s['left_optical'] for s in states['states']
                            if s['visible_left'] and s['visible_right']] or np.zeros((0, 3)))
            if len(xyz):
                ax.plot(xyz[:, 0], xyz[:, 2], -xyz[:, 1], color='black', lw=1, alpha=0.6)
        for track_id, xyz in points.items():
            xyz = np.array(xyz)
            state = final_state.get(track_id, TrackState.TENTATIVE)
            ax.scatter(xyz[:, 0], xyz[:, 2], -xyz[:, 1], s=6, color=STATE_COLOURS[state])
        ax.set_xlabel('x [m]')
        ax.set_ylabel('z (depth) [m]')
        ax.set_zlabel('-y (up) [m]')
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(title)
    fig.suptitle('3D points: black = true object paths; green = kept (persistent), '
                 'red = filtered (transient), orange = undecided')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_attention(decided: Run, path: Path) -> bool:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    latest = {}
    for _, tracks in decided:
        for track in tracks:
            if len(track.attention) >= 4:
                latest[track.id] = track
    if not latest:
        return False
    # up to two tracks of each decision, the longest attention first
    ranked = sorted(latest.values(), key=lambda t: (-len(t.attention), t.id))
    chosen = [t for t in ranked if t.state == TrackState.PERSISTENT][:2]
    chosen += [t for t in ranked if t.state != TrackState.PERSISTENT][:4 - len(chosen)]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(9, 2.0 * len(chosen)), squeeze=False)
    for ax, track in zip(axes[:, 0], chosen):
        ax.bar(np.arange(len(track.attention)), track.attention,
               color=STATE_COLOURS[track.state])
        ax.set_title(f'track {track.id}: {track.state.label}, p={track.probability:.2f}',
                     fontsize=9)
        ax.set_ylabel('attention')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel('frame in the model window (oldest left)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_image(frames: List[StereoFrame], decided: Run, truth: Truth, path: Path) -> None:
    import cv2
    index = len(frames) * 2 // 3
    stamp_ns = frames[index].stamp_ns
    image = cv2.cvtColor(frames[index].left_image, cv2.COLOR_RGB2BGR)
    states = {t.left_detection_id: t.state for s, tracks in decided if s == stamp_ns
              for t in tracks if t.left_detection_id}
    for detection in frames[index].left.detections:
        state = states.get(detection.id)
        colour = STATE_COLOURS.get(state, '#9e9e9e').lstrip('#')
        bgr = tuple(int(colour[i:i + 2], 16) for i in (4, 2, 0))
        x0, y0, x1, y1 = (int(round(v)) for v in detection.xyxy())
        cv2.rectangle(image, (x0, y0), (x1, y1), bgr, 1)
        kind = truth.kind(detection.id) or '?'
        cv2.putText(image, kind[:4], (x0, max(8, y0 - 2)), cv2.FONT_HERSHEY_PLAIN, 0.7, bgr, 1)
    image = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), image)


def main(args: argparse.Namespace) -> int:
    """Run the demo; return the exit status."""
    started = time.monotonic()
    out = Path(args.out)
    overrides = {'duration_s': args.duration} if args.duration else None
    try:
        scenario = load_scenario(args.scenario, seed=args.seed, overrides=overrides)
        # named from the scenario's name as a safe file name, never from the argument (which
        # may be a path): the scene folder is always inside ``out``
        scene = out / f'{file_name(scenario["name"])}-s{args.seed:04d}'
        out.mkdir(parents=True, exist_ok=True)
        _say(f'1/4 rendering {args.scenario} seed {args.seed} to {scene} (MuJoCo, CPU)')
        generate_scene(scenario, scene, overwrite=True)  # replaces only a scene it wrote
    except (ScenarioError, OSError) as error:
        print(f'persistence-ros demo: error: {error}', file=sys.stderr)
        return 2
    truth = Truth.load(scene / 'truth.json')

    node_result = None
    if not args.no_replay:
        _say('2/4 replay through the ROS 2 node')
        recorded = replay_through_node(scene, out / 'node_output')
        if recorded is not None:
            node_result = evaluate_bag(scene, tracks_bag=recorded)
    filters = available_filters()
    _say(f'3/4 core pipeline with filters: {", ".join(filters)}')
    calibration, frames = read_stereo_bag(scene, with_images=True)  # read once, images kept
    settings = Settings()
    if GBDT_BASELINE.exists():
        settings = replace_fields(settings, {'filter.gbdt_path': str(GBDT_BASELINE)})
    runs = run_filters_on_frames(calibration, frames, truth, filters, settings)
    results = [score_run(run, truth, name, __version__) for name, run in runs.items()]
    if node_result is not None:
        results.append(node_result)
    (out / 'metrics.json').write_text(json.dumps({'results': results}, indent=1) + '\n')

    best = 'learned' if 'learned' in runs else max(
        (r for r in results if r['run']['filter'] in runs),
        key=lambda r: r['tracks']['f1'] or 0.0)['run']['filter']
    _say(f'4/4 figures and report (decisions shown: {best})')
    _plot_trajectories(runs['none'], runs[best], truth, out / 'trajectories.png')
    has_attention = _plot_attention(runs[best], out / 'attention.png')
    _plot_image(frames, runs[best], truth, out / 'left_image.png')
    write_report(out, args, results, best, has_attention, node_result is not None,
                 time.monotonic() - started)
    _say(f'done in {time.monotonic() - started:.0f} s: {out / "report.md"}')
    print(summary_table(results))
    return 0


def write_report(out: Path, args, results: List[dict], best: str, has_attention: bool,
                 replayed: bool, seconds: float) -> None:
    """Write report.md beside the figures."""
    lines = [
        f'# persistence_ros demo: {args.scenario}, seed {args.seed}', '',
        f'persistence_ros {__version__}; {seconds:.0f} s on this machine; command: '
        f'`persistence-ros demo --out {args.out} --scenario {args.scenario} --seed {args.seed}`.',
        '',
        '## Metrics (one scene; docs/benchmarks.md has 10 held-out seeds per preset)', '',
        summary_table(results), '',
        'tracks: precision/recall/F1 of the PERSISTENT decision per stereo track; points: '
        'spurious = published 3D points not from a real object; MOT on the left camera’s '
        '2D tracks (trackeval). Definitions: docs/evaluation.md.', '']
    if not replayed:
        lines += ['The replay through the ROS node did not run (see the demo output); the '
                  'table scores the core pipeline, which the node wraps.', '']
    if 'learned' not in {r['run']['filter'] for r in results}:
        lines += ['**The learned filter is not in this table: no trained weights are shipped '
                  'yet** (see the model issue). The figures show the best baseline, '
                  f'`{best}`.', '']
    lines += ['## Figures', '',
              '![3D trajectories](trajectories.png)', '',
              f'3D points of every stereo track, coloured by the `{best}` decision, over the '
              'true object paths.', '',
              '![left image](left_image.png)', '',
              'Left image two thirds through the scene: boxes coloured by decision (grey: '
              'no stereo track), labelled with the true kind (obje(ct), refl(ection), glar(e), '
              'fals(e positive)).', '']
    if has_attention:
        lines += ['![attention](attention.png)', '',
                  'Attention of the decision over the frames of a few tracks.', '']
    (out / 'report.md').write_text('\n'.join(lines))
