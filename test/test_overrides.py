"""Tests of the ``--set KEY=VALUE`` options and their application to core configs."""

import pytest

from persistence_ros.overrides import parse_overrides, replace_fields
from persistence_ros.settings import Settings


def test_dotted_overrides_replace_nested_fields_only():
    base = Settings()
    config = replace_fields(base, parse_overrides(['tracker.appearance_gate=1.0',
                                                   'association.min_common_frames=5',
                                                   'pipeline.window=32']))
    assert config.tracker.appearance_gate == 1.0
    assert config.association.min_common_frames == 5
    assert config.pipeline.window == 32
    # everything else, and the original, untouched
    assert config.tracker.max_age == base.tracker.max_age
    assert config.triangulation == base.triangulation
    assert base.tracker.appearance_gate == Settings().tracker.appearance_gate
    assert replace_fields(base, {}) == base


@pytest.mark.parametrize('items, message', [
    (['tracker.gate=1'], "unknown field 'tracker.gate'; fields of tracker:"),
    (['trackers.max_age=1'], "unknown field 'trackers.max_age'; fields of the config:"),
    (['frame.size=3'], "unknown field 'frame.size'"),
    (['filter.name.x=3'], "'filter.name' has no fields"),
    (['tracker.appearance_gate=2'], 'appearance_gate must be a number in [0, 1], got 2'),
    (['tracker.max_age'], "--set expects KEY=VALUE, got 'tracker.max_age'"),
])
def test_bad_overrides_say_what_to_fix(items, message):
    with pytest.raises(ValueError) as info:
        replace_fields(Settings(), parse_overrides(items))
    assert message in str(info.value)


@pytest.mark.parametrize('items, message', [
    (['tracker.max_age=2.5'], 'tracker.max_age: expected int, got 2.5'),
    (['triangulation.refine=maybe'], 'triangulation.refine: expected bool (true or false), '
                                     "got 'maybe'"),
    (['association.min_common_frames=x'], "association.min_common_frames: expected int, got 'x'"),
    (['pipeline.crop_context=wide'], "pipeline.crop_context: expected float, got 'wide'"),
    (['tracker=5'], "'tracker' is a section, not a value (got 5); set its fields, e.g. "
                    'tracker.'),
])
def test_override_values_are_checked_against_the_field_types(items, message):
    with pytest.raises(ValueError) as info:
        replace_fields(Settings(), parse_overrides(items))
    assert message in str(info.value)


def test_numbers_in_exponent_notation_are_read_as_floats():
    # PyYAML reads 5e-1 as a string; the field's type says it is a float
    config = replace_fields(Settings(), parse_overrides(['tracker.appearance_gate=5e-1',
                                                         'pipeline.crop_context=1e-1']))
    assert config.tracker.appearance_gate == 0.5 and config.pipeline.crop_context == 0.1
    assert isinstance(config.pipeline.crop_context, float)
    config = replace_fields(Settings(), parse_overrides(['tracker={max_age: 7}']))
    assert config.tracker.max_age == 7 and config.tracker.min_hits == Settings(
    ).tracker.min_hits
