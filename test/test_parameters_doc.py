"""config/persistence.yaml, the code defaults and the README table agree exactly."""

import json
from pathlib import Path
import re

import yaml

from persistence_ros.model import DEFAULT_WEIGHTS
from persistence_ros.overrides import flatten
from persistence_ros.ros.parameters import DEFAULTS, PARAMETERS, validate

ROOT = Path(__file__).resolve().parents[1]


def _yaml_values():
    data = yaml.safe_load((ROOT / 'config' / 'persistence.yaml').read_text())
    assert list(data) == ['/**']
    return flatten(data['/**']['ros__parameters'])


def _readme_rows():
    text = (ROOT / 'README.md').read_text()
    section = text.split('\n## Parameters\n', 1)[1].split('\n## ', 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r'\| `([^`]+)` \| (\w+(?:\[\])?) \| `([^`]*)` \|', line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_yaml_equals_code_defaults_with_types():
    values = _yaml_values()
    assert list(values) == list(DEFAULTS)
    for name, default in DEFAULTS.items():
        assert values[name] == default and type(values[name]) is type(default), name
    assert validate(values) == []


def test_readme_table_lists_every_parameter_with_type_and_default():
    rows = _readme_rows()
    assert list(rows) == [p.name for p in PARAMETERS]
    for p in PARAMETERS:
        type_name, default = rows[p.name]
        assert type_name == p.type_name, p.name
        assert default == yaml.safe_dump(p.default, default_flow_style=True).strip().removesuffix(
            '\n...').strip(), p.name


def test_every_parameter_is_described_and_ranged_defaults_are_in_range():
    for p in PARAMETERS:
        assert p.description
        if p.range is not None:
            assert p.range[0] <= p.default <= p.range[1], p.name
        if p.choices is not None:
            assert p.default in p.choices


def test_learned_decision_defaults_are_the_shipped_weights_and_are_checked():
    # the node's defaults reproduce the model card's rule (the JSON beside the weights)
    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix('.json').read_text())['config']['decision']
    assert {k: DEFAULTS[f'model.decision.{k}'] for k in shipped} == shipped
    values = dict(DEFAULTS, **{'model.decision.lo': 0.5, 'model.decision.hi': 0.5})
    assert validate(values) == ['model.decision.lo (0.5) must be < model.decision.hi (0.5)']


def test_every_parameter_is_a_path_in_the_settings_tree():
    # one config path: a parameter name addresses the same field as `--set NAME=VALUE`
    from persistence_ros.overrides import replace_fields
    from persistence_ros.ros.parameters import leaf_values, node_settings, NodeSettings
    leaves = leaf_values(NodeSettings())
    for p in PARAMETERS:
        assert p.name in leaves, p.name
        assert leaves[p.name] == p.default
    changed = node_settings({'tracker.high_score': 0.7, 'pipeline.window': 16,
                             'model.decision.min_frames': 4, 'sync.slop': 0.05})
    assert changed == replace_fields(NodeSettings(), {
        'tracker': {'high_score': 0.7}, 'pipeline.window': 16,
        'model.decision': {'min_frames': 4}, 'sync.slop': 0.05})
    assert (changed.tracker.high_score, changed.pipeline.window,
            changed.model.decision.min_frames, changed.sync.slop) == (0.7, 16, 4, 0.05)
