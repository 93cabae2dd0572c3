"""Tests of the ``--set KEY=VALUE`` options and their application to core configs."""

import pytest

from persistence_ros.overrides import parse_overrides, replace_fields
from persistence_ros.pipeline import PipelineConfig


def test_dotted_overrides_replace_nested_fields_only():
    base = PipelineConfig()
    config = replace_fields(base, parse_overrides(['tracker.appearance_gate=1.0',
                                                   'association.min_common_frames=5',
                                                   'window=32']))
    assert config.tracker.appearance_gate == 1.0
    assert config.association.min_common_frames == 5
    assert config.window == 32
    # everything else, and the original, untouched
    assert config.tracker.max_age == base.tracker.max_age
    assert config.triangulation == base.triangulation
    assert base.tracker.appearance_gate == PipelineConfig().tracker.appearance_gate
    assert replace_fields(base, {}) == base


@pytest.mark.parametrize('items, message', [
    (['tracker.gate=1'], "unknown field 'tracker.gate'; fields of tracker:"),
    (['trackers.max_age=1'], "unknown field 'trackers.max_age'; fields of the config:"),
    (['window.size=3'], "'window' has no fields"),
    (['tracker.appearance_gate=2'], 'appearance_gate must be a number in [0, 1], got 2'),
    (['tracker.max_age'], "--set expects KEY=VALUE, got 'tracker.max_age'"),
])
def test_bad_overrides_say_what_to_fix(items, message):
    with pytest.raises(ValueError) as info:
        replace_fields(PipelineConfig(), parse_overrides(items))
    assert message in str(info.value)
