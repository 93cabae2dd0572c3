"""``persistence-ros evaluate``: score a run against ``truth.json``; ``--compare`` filters."""

import argparse
import dataclasses
import json
import os
from pathlib import Path
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from persistence_ros import __version__
from persistence_ros.calibration import StereoCalibration
from persistence_ros.evaluation.runner import (
    collect_gbdt_training, evaluate_bag, scene_settings)
from persistence_ros.evaluation.scoring import score_run, Truth
from persistence_ros.filter_factory import build_filter
from persistence_ros.gbdt import GbdtFilter
from persistence_ros.model import DEFAULT_WEIGHTS, GBDT_BASELINE
from persistence_ros.offline_runner import (
    needs_images, read_stereo_bag, Run, run_pipeline, StereoFrame)
from persistence_ros.overrides import parse_overrides, replace_fields
from persistence_ros.settings import FILTER_NAMES, Settings

BASELINES = ('none', 'min_hits', 'score', 'stereo', 'ground_plane')

# (column title, section, key) of the comparison table.
COLUMNS = (
    ('track P', 'tracks', 'precision'), ('track R', 'tracks', 'recall'),
    ('track F1', 'tracks', 'f1'), ('spurious', 'points', 'spurious_fraction'),
    ('real kept', 'points', 'real_kept_fraction'), ('RMSE m', 'points', 'rmse_m'),
    ('RMSE smoothed m', 'points', 'rmse_smoothed_m'),
    ('decision med', 'decision', 'median_frames'), ('HOTA', 'mot', 'hota'),
    ('MOTA', 'mot', 'mota'), ('IDF1', 'mot', 'idf1'),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to a parser."""
    parser.add_argument('--bag', action='append', required=True, metavar='DIR',
                        help='input rosbag2 directory (truth.json beside it); with --compare '
                             'repeatable, or a directory of scene directories')
    parser.add_argument('--truth', help='truth.json (default: BAG/truth.json)')
    parser.add_argument('--tracks', metavar='OUTPUT_BAG',
                        help='score the TrackArray messages a node recorded in this bag '
                             'instead of running the core pipeline')
    parser.add_argument('--tracks-topic', help='TrackArray topic in --tracks (default: the '
                                               'only TrackArray topic)')
    parser.add_argument('--json', metavar='PATH', help='write the metrics to this JSON file')
    parser.add_argument('--filter', default='learned', choices=FILTER_NAMES,
                        help='persistence filter for the core pipeline (default: learned)')
    parser.add_argument('--model', metavar='PATH', action='append',
                        help='checkpoint of the learned filter (default: the shipped weights; '
                             'repeat for an ensemble: p is the mean of the members)')
    parser.add_argument('--gbdt', metavar='NPZ',
                        help='gbdt training set written by a previous --save-gbdt (default: '
                             'the shipped one, model/weights/gbdt_baseline.npz)')
    parser.add_argument('--train-bag', action='append', default=[], metavar='DIR',
                        help='training-split scene (repeatable, or a directory of scenes) to '
                             'fit the gbdt filter on now')
    parser.add_argument('--train-dataset', metavar='DIR',
                        help="fit the gbdt filter now on a data set's training split (the rows "
                             '`simulate --dataset` stores per stereo track, with and without the '
                             'ground plane): no bags needed')
    parser.add_argument('--save-gbdt', metavar='NPZ', help='save the fitted gbdt training set')
    parser.add_argument('--compare', action='store_true',
                        help='run every filter on every --bag and print a table of '
                             'per-scenario means')
    parser.add_argument('--filters', help='comma-separated filters for --compare (default: '
                                          'the baselines, gbdt with --gbdt/--train-bag, '
                                          'learned with --model or shipped weights)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a setting (the node parameter of the same name), e.g. '
                             'tracker.appearance_gate=1.0 (VALUE is read as YAML; repeatable)')
    parser.add_argument('--plane-from-truth', action='store_true',
                        help="give the filters the scene's true ground plane (truth.json) as "
                             'filter.ground_plane; default: none, as the node runs with its '
                             'defaults (the ground_plane filter is then left out of --compare)')
    parser.add_argument('--no-fail-safe', action='store_true',
                        help="let the learned filter's model decide every track, also on rigs "
                             'and tracks outside its training ranges (measures the model '
                             'itself, e.g. on another source; the node always has the '
                             'fail-safe, model.fallback)')
    parser.add_argument('--errors', action='store_true',
                        help='list the wrongly decided stereo tracks under tracks.errors in '
                             'the JSON (outcome, true kinds of their detections, last state)')
    parser.add_argument('--decision', action='append', default=[], metavar='KEY=VALUE',
                        help="override the learned filter's early-decision rule (hi, lo, "
                             "min_frames, recheck; default: the node's model.decision.*), "
                             'e.g. min_frames=3; short for --set model.decision.KEY=VALUE '
                             '(repeatable)')


def scene_dirs(paths: List[str]) -> List[Path]:
    """Expand each path into scene directories (those holding a truth.json)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if (p / 'truth.json').is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(d for d in p.iterdir() if (d / 'truth.json').is_file())
            if not found:
                raise FileNotFoundError(f'{p}: no truth.json in it or in its subdirectories')
            out.extend(found)
        else:
            raise FileNotFoundError(f'{p}: not a directory')
    return out


def check_training_scenes(train: List[Path], scored: List[Path]) -> None:
    """
    Raise ``ValueError`` if a training scene has an evaluation seed or is a scored scene.

    The same rule as the data-set builder (``simulation.dataset.EVALUATION_SEEDS``): a filter
    fitted on held-out scenes, or on the scene it is scored on, would be scored on its own
    training data.
    """
    from persistence_ros.simulation.dataset import EVALUATION_SEEDS
    scored_ids = {}
    for scene in scored:
        scored_ids[scene.resolve()] = scene
        truth_path = scene / 'truth.json'
        if truth_path.is_file():
            truth = Truth.load(truth_path).data
            scored_ids[(truth.get('scenario'), truth.get('seed'))] = scene
    for scene in train:
        truth = Truth.load(scene / 'truth.json').data
        seed = truth.get('seed')
        if seed in EVALUATION_SEEDS:
            raise ValueError(f'--train-bag {scene}: seed {seed} is an evaluation seed '
                             f'({min(EVALUATION_SEEDS)}-{max(EVALUATION_SEEDS)}) and must not '
                             'be used for training scenes')
        same = scored_ids.get(scene.resolve()) or scored_ids.get((truth.get('scenario'), seed))
        if same is not None:
            raise ValueError(f'--train-bag {scene} is the scene scored as --bag {same} '
                             f'({truth.get("scenario")}, seed {seed}): fit on other scenes')


def _gbdt_save_path(args) -> str:
    return args.save_gbdt or str(Path(args.json or 'metrics.json').with_suffix('.gbdt.npz'))


def _scored_scenes(args) -> List[Path]:
    return scene_dirs(args.bag) if args.compare else [Path(bag) for bag in args.bag]


def _gbdt_path(args, settings: Optional[Settings] = None) -> Optional[str]:
    """Return the gbdt training-set file, fitting one on --train-bag first if asked."""
    if not args.train_bag and not args.train_dataset:
        return args.gbdt or (str(GBDT_BASELINE) if GBDT_BASELINE.exists() else None)
    if args.train_bag and args.train_dataset:
        raise ValueError('give --train-bag or --train-dataset, not both')
    if args.train_dataset:
        from persistence_ros.simulation.dataset import gbdt_training_rows
        x, y = gbdt_training_rows(args.train_dataset)
    else:
        train = scene_dirs(args.train_bag)
        check_training_scenes(train, _scored_scenes(args))
        x, y = collect_gbdt_training(train, settings=settings)
    path = _gbdt_save_path(args)
    GbdtFilter().fit(x, y).save(path)
    print(f'gbdt: fitted on {len(y)} tracks ({int(y.sum())} real), saved to {path}',
          file=sys.stderr)
    return path


def filter_settings(settings: Settings, name: str) -> Settings:
    """Return ``settings`` with ``filter.name`` set to ``name``."""
    return replace_fields(settings, {'filter.name': name})


def _build_filters(truth: Truth, filters: List[str], settings: Settings,
                   ensemble: Optional[Sequence[str]], plane_from_truth: bool = False,
                   fail_safe: bool = True) -> Dict[str, object]:
    built = {name: build_filter(scene_settings(filter_settings(settings, name), truth,
                                               plane_from_truth),
                                ensemble if name == 'learned' else None)
             for name in filters}
    if not fail_safe and 'learned' in built:
        built['learned'].disable_fail_safe()
    return built


def _run_built(scene: Path, built: Dict[str, object], settings: Optional[Settings],
               timings: Optional[Dict[str, Dict[str, float]]] = None) -> Dict[str, Run]:
    with_images = any(needs_images(f, settings) for f in built.values())
    calibration, frames = read_stereo_bag(scene, with_images=with_images)
    return _run_on_frames(calibration, frames, built, settings, timings)


def _run_on_frames(calibration: StereoCalibration, frames: Sequence[StereoFrame],
                   built: Dict[str, object], settings: Optional[Settings],
                   timings: Optional[Dict[str, Dict[str, float]]] = None
                   ) -> Dict[str, Run]:
    """Run each filter; ``timings`` (optional) gets each run's ``throughput``."""
    runs = {}
    for name, filt in built.items():
        wall, cpu = time.perf_counter(), time.process_time()
        runs[name] = run_pipeline(calibration, frames, filt, settings)
        if timings is not None:
            timings[name] = throughput(len(frames), time.perf_counter() - wall,
                                       time.process_time() - cpu)
    return runs


def throughput(frames: int, wall_s: float, cpu_s: float) -> Dict[str, float]:
    """Return a run's frames, wall and CPU seconds and frames per second (wall)."""
    return {'frames': frames, 'wall_s': wall_s, 'cpu_s': cpu_s,
            'frames_per_s': frames / wall_s if wall_s > 0 else 0.0}


def model_compute(persistence_filter) -> Optional[Dict[str, int]]:
    """
    Return the model work of a filter that has a model (``LearnedFilter.stats``), else None.

    ``frames_encoded``: frames the model ran on; ``frames_skipped_decided``: frames of
    already decided tracks it did not run on (the compute the early decision saved).
    """
    stats = getattr(persistence_filter, 'stats', None)
    return None if stats is None else dataclasses.asdict(stats)


def run_filters_on_frames(calibration: StereoCalibration, frames: Sequence[StereoFrame],
                          truth: Truth, filters: List[str],
                          settings: Optional[Settings] = None) -> Dict[str, Run]:
    """Run every filter on frames already read (``read_stereo_bag``, with images)."""
    settings = settings if settings is not None else Settings()
    return _run_on_frames(calibration, frames,
                          _build_filters(truth, filters, settings, None), settings)


def compare(scenes: List[Path], filters: List[str], settings: Optional[Settings] = None,
            ensemble: Optional[Sequence[str]] = None, errors: bool = False,
            plane_from_truth: bool = False, fail_safe: bool = True) -> List[dict]:
    """
    Return the metrics of every filter on every scene (bags are read once).

    ``settings``: everything but ``filter.name`` (each filter of ``filters`` in turn);
    ``ensemble``: several checkpoints for the learned filter; ``plane_from_truth``: give the
    filters each scene's true ground plane (default: the node's default, none).  A filter with
    a model also reports its ``compute`` (``model_compute``); ``errors`` adds
    ``tracks.errors`` (``scoring.score_tracks``).  Each result says under ``run.plane``
    whether the plane was given.  ``fail_safe`` False: the learned filter's model decides
    every track, in its training domain or not (``LearnedFilter.disable_fail_safe``; a
    measurement of the model itself, never the node's behaviour), said under ``run.fail_safe``.
    """
    settings = settings if settings is not None else Settings()
    results = []
    for scene in scenes:
        truth = Truth.load(scene / 'truth.json')
        built = _build_filters(truth, filters, settings, ensemble, plane_from_truth, fail_safe)
        timings: Dict[str, Dict[str, float]] = {}
        runs = _run_built(scene, built, settings, timings)
        for name, run in runs.items():
            result = score_run(run, truth, name, __version__, errors)
            result['run']['bag'] = str(scene)
            result['run']['plane'] = 'truth' if plane_from_truth else 'none'
            result['run']['fail_safe'] = fail_safe
            result['throughput'] = timings[name]
            compute = model_compute(built[name])
            if compute is not None:
                result['compute'] = compute
            diagnostics = built[name].diagnostics()
            if diagnostics:  # the node's filter.* values at the scene's end (the fail-safe's)
                result['filter_diagnostics'] = diagnostics
            results.append(result)
    return results


def compute_summary(results: List[dict]) -> List[str]:
    """Return one line per filter with a model: frames encoded and skipped, over all scenes."""
    totals: Dict[str, List[int]] = {}
    for r in results:
        if 'compute' in r:
            t = totals.setdefault(r['run']['filter'], [0, 0])
            t[0] += r['compute']['frames_encoded']
            t[1] += r['compute']['frames_skipped_decided']
    return [f'{name}: the model encoded {enc} frames and skipped {skip} of decided tracks '
            f'({100.0 * skip / max(enc + skip, 1):.1f} % of the frames it would run with '
            'recheck)' for name, (enc, skip) in totals.items()]


def fail_safe_summary(results: List[dict]) -> List[str]:
    """Return one line per learned filter: scenes outside its domain, tracks on its fallback."""
    totals: Dict[str, List] = {}
    for r in results:
        values = r.get('filter_diagnostics', {})
        if 'domain' in values:
            t = totals.setdefault(r['run']['filter'], [0, 0, 0, values['domain.fallback'],
                                                       set()])
            t[0] += 1
            t[1] += values['domain'] == 'outside'
            t[2] += int(values['domain.tracks_decided_by_fallback'])
            if values['domain.reasons']:
                t[4].add(values['domain.reasons'])
    return [f"{name}: {outside} of {n} scenes outside the model's domain, {decided} tracks "
            f'decided by the fallback rule ({fallback})'
            + (f'; {" | ".join(sorted(reasons))}' if reasons else '')
            for name, (n, outside, decided, fallback, reasons) in totals.items()]


def throughput_summary(results: List[dict]) -> List[str]:
    """Return one line per filter: frames processed per second over all its scenes."""
    totals: Dict[str, List[float]] = {}
    for r in results:
        if 'throughput' in r:
            t = totals.setdefault(r['run']['filter'], [0, 0.0, 0.0])
            t[0] += r['throughput']['frames']
            t[1] += r['throughput']['wall_s']
            t[2] += r['throughput']['cpu_s']
    return [f'{name}: {int(n)} frames in {wall:.1f} s, {n / max(wall, 1e-9):.1f} frames/s '
            f'(CPU {cpu:.1f} s; the pipeline with this filter, bags read beforehand)'
            for name, (n, wall, cpu) in totals.items()]


def _value(result: dict, section: str, key: str) -> Optional[float]:
    value = result.get(section, {}).get(key)
    return None if value is None else float(value)


def summary_table(results: List[dict]) -> str:
    """Return a markdown table of per-(scenario, filter) means over scenes."""
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault((r['run']['scenario'], r['run']['filter']), []).append(r)
    head = ['scenario', 'filter', 'scenes'] + [c[0] for c in COLUMNS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for (scenario, name), group in groups.items():
        cells = [scenario, name, str(len(group))]
        for _, section, key in COLUMNS:
            values = [v for v in (_value(r, section, key) for r in group) if v is not None]
            cells.append(f'{np.mean(values):.3f}' if values else '-')
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _check_learned_options(decision: Dict, no_fail_safe: bool, runs_learned: bool) -> None:
    if runs_learned:
        return
    for given, option, what in ((decision, '--decision', 'sets the rule'),
                                (no_fail_safe, '--no-fail-safe', 'switches off the fail-safe')):
        if given:
            raise ValueError(f'{option} {what} of the learned filter, and no learned filter '
                             f'runs here (add learned to --filters, or drop {option})')


def _check_output(option: str, value: Optional[str]) -> None:
    """Raise ``OSError`` now (not after the run) if the file of ``option`` cannot be written."""
    if not value:
        return
    path = Path(value)
    if path.is_dir():
        raise FileNotFoundError(f'{option} {value} is a folder, not a file')
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f'{option} {value}: the folder {folder} does not exist')
    if not os.access(folder, os.W_OK):
        raise PermissionError(f'{option} {value}: the folder {folder} is not writable')


def run_settings(args) -> Settings:
    """
    Return the settings of an ``evaluate`` run.

    ``--set`` first, then ``--filter``, ``--model`` (one: ``model.path``) and ``--decision``.
    """
    overrides = parse_overrides(args.set)
    overrides['filter.name'] = args.filter
    if args.model and len(args.model) == 1:
        overrides['model.path'] = args.model[0]
    for key, value in parse_overrides(args.decision, '--decision').items():
        overrides[f'model.decision.{key}'] = value
    return replace_fields(Settings(), overrides)


def _ensemble(args) -> Optional[List[str]]:
    return list(args.model) if args.model and len(args.model) > 1 else None


def main(args: argparse.Namespace) -> int:
    """Run ``evaluate``; return the exit status."""
    try:
        _check_output('--json', args.json)
        if args.train_bag or args.train_dataset:
            _check_output('--save-gbdt', _gbdt_save_path(args))
        settings = run_settings(args)
        decision = parse_overrides(args.decision, '--decision')
        gbdt_path = _gbdt_path(args, settings)
        if gbdt_path:
            settings = replace_fields(settings, {'filter.gbdt_path': gbdt_path})
        if args.compare:
            plane = args.plane_from_truth or settings.filter.plane is not None
            filters = (args.filters.split(',') if args.filters else
                       [b for b in BASELINES if plane or b != 'ground_plane']
                       + (['gbdt'] if gbdt_path else [])
                       + (['learned'] if args.model or DEFAULT_WEIGHTS.exists() else []))
            unknown = [f for f in filters if f not in FILTER_NAMES]
            if unknown:
                raise ValueError(f'unknown filters {unknown}; choose from {FILTER_NAMES}')
            if 'ground_plane' in filters and not plane:
                raise ValueError('the ground_plane filter needs a plane: add --plane-from-truth '
                                 '(or --set filter.ground_plane=[a,b,c,d]), or leave it out')
            _check_learned_options(decision, args.no_fail_safe, 'learned' in filters)
            results = compare(scene_dirs(args.bag), filters, settings, _ensemble(args),
                              args.errors, args.plane_from_truth, not args.no_fail_safe)
            print(summary_table(results))
            for line in (compute_summary(results) + fail_safe_summary(results)
                         + throughput_summary(results)):
                print(line)
            output = {'results': results}
        else:
            if len(args.bag) != 1:
                raise ValueError('give one --bag (or use --compare)')
            _check_learned_options(decision, args.no_fail_safe,
                                   args.filter == 'learned' and args.tracks is None)
            filt = None
            if args.tracks is None:
                truth = Truth.load(args.truth or Path(args.bag[0]) / 'truth.json')
                filt = _build_filters(truth, [args.filter], settings, _ensemble(args),
                                      args.plane_from_truth,
                                      not args.no_fail_safe)[args.filter]
            output = evaluate_bag(args.bag[0], args.truth, settings, tracks_bag=args.tracks,
                                  tracks_topic=args.tracks_topic, persistence_filter=filt,
                                  errors=args.errors)
            output['run']['plane'] = 'truth' if args.plane_from_truth else 'none'
            compute = model_compute(filt)
            if compute is not None:
                output['compute'] = compute
            print(json.dumps(output, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(output, indent=1) + '\n')
    except (OSError, ValueError, RuntimeError) as error:
        print(f'persistence-ros evaluate: error: {error}', file=sys.stderr)
        return 2
    return 0
