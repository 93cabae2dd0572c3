"""
The shipped weights' check: a small scene set, never used in training, scored by the evaluator.

``python -m persistence_ros.tools.card`` renders the scenes of ``CHECK_SCENES`` (seeds 1000+,
which the data-set builder refuses): hard presets of the training rig, a rig training never
draws (``heldout_narrow``: 640x480, 10 fps, 6 cm baseline) and the second scene source (a
``composite`` preset: objects composited onto a real stereo photograph).  It runs the
learned filter and the no-filter reference through the evaluator and prints per-scene and
mean track F1; ``--record`` writes them to the weights' card
(``weights/<name>.card.json``), which the CI test compares against.
"""

import argparse
import json
from pathlib import Path
import tempfile
from typing import List, Optional

import numpy as np

from persistence_ros.model import DEFAULT_WEIGHTS
from persistence_ros.overrides import replace_fields

# (source, preset, seed), CHECK_DURATION_S long: a few minutes on 2 CPU cores.  The composite
# seed 1001 draws a 392x294, 55 fps rig (fovy 39 degrees); the test asserts the model, not
# its fail-safe, decided every scene.
CHECK_SCENES = (('mujoco', 'window', 1000), ('mujoco', 'glare', 1000),
                ('mujoco', 'mixed_hard', 1000), ('mujoco', 'reflective_floor', 1000),
                ('mujoco', 'heldout_narrow', 1000), ('composite', 'composite_mixed_hard', 1001))
CHECK_DURATION_S = {'mujoco': 6.0, 'composite': 3.0}
DEFAULT_TOLERANCE = 0.05


def card_path(weights: Path) -> Path:
    """Return the card file of a weights file (``cpu.safetensors`` -> ``cpu.card.json``)."""
    return Path(weights).with_suffix('.card.json')


def render_check_scenes(out_dir: Path) -> List[Path]:
    """Render the check scenes into ``out_dir``; return their directories."""
    from persistence_ros.composite.generate import generate_composite_scene
    from persistence_ros.composite.presets import load_preset
    from persistence_ros.simulation.dataset import scene_name
    from persistence_ros.simulation.generate import generate_scene
    from persistence_ros.simulation.scenario import load_scenario
    sources = {'mujoco': (load_scenario, generate_scene),
               'composite': (load_preset, generate_composite_scene)}
    dirs = []
    for source, preset, seed in CHECK_SCENES:
        scene = Path(out_dir) / scene_name(preset, seed)
        if not (scene / 'truth.json').exists():
            load, generate = sources[source]
            generate(load(preset, seed=seed,
                          overrides={'duration_s': CHECK_DURATION_S[source]}), scene)
        dirs.append(scene)
    return dirs


def check(weights: Path = DEFAULT_WEIGHTS, work_dir: Optional[Path] = None) -> dict:
    """
    Render the check scenes, score the learned filter and the no-filter reference on them.

    Returns per-scene and mean track F1 of both (the reference shows how hard the set is).
    """
    from persistence_ros.evaluation.command import compare
    from persistence_ros.settings import Settings
    settings = replace_fields(Settings(), {'model.path': str(weights)})
    with tempfile.TemporaryDirectory() as tmp:
        scenes = render_check_scenes(Path(work_dir or tmp))
        results = compare(scenes, ['learned', 'none'], settings)
    out = {'scenes': [list(s) for s in CHECK_SCENES], 'duration_s': CHECK_DURATION_S}
    for name, key in (('learned', ''), ('none', 'reference_')):
        per_scene = {f'{r["run"]["scenario"]}-s{r["run"]["seed"]}': r['tracks']['f1']
                     for r in results if r['run']['filter'] == name}
        out[key + 'per_scene_f1'] = per_scene
        out[key + 'mean_f1'] = float(np.mean([v or 0.0 for v in per_scene.values()]))
    # whether the model decided (inside its domain) or its fail-safe did, per scene
    out['per_scene_domain'] = {
        f'{r["run"]["scenario"]}-s{r["run"]["seed"]}': r['filter_diagnostics']['domain']
        for r in results if r['run']['filter'] == 'learned'}
    return out


def main(argv=None) -> int:
    """Run the check; with ``--record`` write the card."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument('--record', action='store_true', help='write the card file')
    parser.add_argument('--tolerance', type=float, default=DEFAULT_TOLERANCE)
    args = parser.parse_args(argv)
    result = check(args.weights)
    print(json.dumps(result, indent=1))
    if args.record:
        result['tolerance'] = args.tolerance
        card_path(args.weights).write_text(json.dumps(result, indent=1) + '\n')
        print(f'recorded in {card_path(args.weights)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
