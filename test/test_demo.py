"""The main job (`make demo`) end to end on a short scene, through the real node."""

import json
import os
from pathlib import Path
import subprocess
import sys

from persistence_ros.settings import FILTER_NAMES


def test_demo_writes_report_with_every_filter_and_the_node(tmp_path):
    out = tmp_path / 'demo'
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    # from a folder outside the source tree, as a user would run the installed command
    result = subprocess.run([sys.executable, '-m', 'persistence_ros', 'demo', '--out', str(out),
                             '--seed', '1001', '--duration', '2'], cwd=tmp_path, env=env,
                            text=True, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'replay failed' not in result.stdout, result.stdout
    report = (out / 'report.md').read_text()
    results = {r['run']['filter']: r
               for r in json.loads((out / 'metrics.json').read_text())['results']}
    # the node's defaults: no ground plane, so no ground_plane filter
    shown = set(FILTER_NAMES) - {'ground_plane'}
    assert set(results) == shown | {'node'}
    # the node (default filter: learned) decided exactly what the core pipeline decided
    assert results['node']['tracks'] == results['learned']['tracks']
    for name in sorted(shown) + ['node']:
        assert f'| mixed_hard | {name} |' in report
    for figure in ('trajectories.png', 'attention.png', 'left_image.png'):
        assert (out / figure).stat().st_size > 10_000
        assert f'({figure})' in report
    assert Path(out / 'node_output').is_dir()


def _demo_args(*argv):
    import argparse

    from persistence_ros.tools import demo
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    return demo, parser.parse_args(list(argv))


def test_demo_scene_folder_is_named_from_the_scenario_inside_out(tmp_path, monkeypatch):
    # a scenario given by path: the scene folder is out/<name>-s<seed>, never <path>-s<seed>
    # (which, for an absolute path, ignored --out and was replaced: a sibling folder deleted)
    config = tmp_path / 'config'
    config.mkdir()
    scenario = config / 'tiny.yaml'
    scenario.write_text('name: my/../../tiny scene\nduration_s: 0.3\nfps: 10.0\n'
                        'rig: {width: 96, height: 72}\nobjects: {count: 1}\n')
    sibling = config / 'tiny.yaml-s1000'
    sibling.mkdir()
    (sibling / 'keep.txt').write_text('not a scene')
    out = tmp_path / 'out'
    demo, args = _demo_args('--scenario', str(scenario), '--out', str(out), '--no-replay')
    monkeypatch.setattr(demo, 'available_filters', lambda: ['none'])  # the scene is the point
    assert demo.main(args) == 0
    assert (sibling / 'keep.txt').read_text() == 'not a scene'
    assert (out / 'my_.._.._tiny_scene-s1000' / 'truth.json').is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config', 'out']


def test_demo_unknown_scenario_is_a_clear_error(tmp_path, capsys):
    demo, args = _demo_args('--scenario', 'nope', '--out', str(tmp_path / 'out'))
    assert demo.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("persistence-ros demo: error: no scenario file or preset named 'nope'")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'out').exists()
