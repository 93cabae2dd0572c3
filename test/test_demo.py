"""The main job (`make demo`) end to end on a short scene, through the real node."""

import json
import os
from pathlib import Path
import subprocess
import sys

from persistence_ros.filters import FILTER_NAMES


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
    assert set(results) == set(FILTER_NAMES) | {'node'}
    # the node (default filter: learned) decided exactly what the core pipeline decided
    assert results['node']['tracks'] == results['learned']['tracks']
    for name in FILTER_NAMES + ('node',):
        assert f'| mixed_hard | {name} |' in report
    for figure in ('trajectories.png', 'attention.png', 'left_image.png'):
        assert (out / figure).stat().st_size > 10_000
        assert f'({figure})' in report
    assert Path(out / 'node_output').is_dir()
