"""Tests of the model configuration's checks: types and ranges, in YAML, --set and --decision."""


import pytest

from persistence_ros.model.config import load_config, ModelConfig
from persistence_ros.model.decision import EarlyDecision
from persistence_ros.model.model import PersistenceModel
from persistence_ros.overrides import parse_overrides


def test_yaml_and_set_numbers_in_exponent_notation_are_floats(tmp_path):
    # PyYAML reads 1e-3 and 3e-4 (no dot) as strings; they used to reach AdamW as such.
    path = tmp_path / 'mine.yaml'
    path.write_text('name: mine\ntrain:\n  lr: 3e-4\n  weight_decay: 0\ndecision:\n  hi: 9e-1\n')
    config = load_config(path)
    assert config.train.lr == pytest.approx(3e-4) and isinstance(config.train.lr, float)
    assert config.train.weight_decay == 0 and config.decision.hi == pytest.approx(0.9)
    config = load_config('cpu', parse_overrides(['train.lr=1e-3', 'decision.lo=5e-2']))
    assert isinstance(config.train.lr, float) and config.train.lr == pytest.approx(1e-3)
    assert config.decision.lo == pytest.approx(0.05)
    # a section given as a mapping sets its fields, the others keep theirs
    config = load_config('cpu', parse_overrides(['train={lr: 2e-3, epochs: 3}']))
    assert (config.train.lr, config.train.epochs, config.train.batch_size) == (2e-3, 3, 32)


@pytest.mark.parametrize('item, message', [
    ('train.lr=fast', "train.lr: expected float, got 'fast'"),
    ('train.epochs=2.5', 'train.epochs: expected int, got 2.5'),
    ('train.epochs=x', "train.epochs: expected int, got 'x'"),
    ('train.finetune_tokenizer=maybe', 'train.finetune_tokenizer: expected bool (true or false), '
                                       "got 'maybe'"),
    ('train.finetune_tokenizer=1', 'train.finetune_tokenizer: expected bool'),
    ('decision.recheck=maybe', "decision.recheck: expected bool (true or false), got 'maybe'"),
    ('decision.min_frames=x', "decision.min_frames: expected int, got 'x'"),
    ('decision.hi=high', "decision.hi: expected float, got 'high'"),
    ('tokenizer.channels=8', 'tokenizer.channels: expected list of int, got 8'),
    ('tokenizer.fsq_levels=[8, 5, x]', "tokenizer.fsq_levels[2]: expected int, got 'x'"),
    ('classifier.geometry_features=[score, 1]', 'classifier.geometry_features[1]: expected str'),
    ('name=12', 'name: expected str, got 12'),
    ('train=5', "'train' is a section, not a value (got 5); set its fields, e.g. train."),
    ('decision=true', "'decision' is a section, not a value"),
])
def test_set_values_of_the_wrong_type_name_key_value_and_type(item, message):
    with pytest.raises(ValueError) as info:
        load_config('cpu', parse_overrides([item]))
    assert message in str(info.value)


@pytest.mark.parametrize('item, message', [
    ('classifier.age_max=0', 'classifier.age_max must be >= 1, got 0'),
    ('classifier.layers=0', 'classifier.layers must be >= 1, got 0'),
    ('classifier.window=0', 'classifier.window must be >= 1, got 0'),
    ('classifier.heads=0', 'classifier.heads must be >= 1, got 0'),
    ('classifier.heads=5', 'classifier.width (64) must be divisible by classifier.heads (5)'),
    ('classifier.mlp_ratio=0', 'classifier.mlp_ratio must be >= 1, got 0'),
    ('classifier.dropout=1.5', 'classifier.dropout must be in [0, 1), got 1.5'),
    ('input_size=36', 'input_size must be a multiple of 2 ** 3 = 8'),
    ('crop_size=0', 'crop_size must be >= 1, got 0'),
    ('tokenizer.kernel_t=0', 'tokenizer.kernel_t must be >= 1, got 0'),
    ('tokenizer.res_blocks=-1', 'tokenizer.res_blocks must be >= 0, got -1'),
    ('tokenizer.fsq_levels=[]', 'tokenizer.fsq_levels must be a non-empty list of integers >= 3'),
    ('tokenizer.fsq_levels=[8, 2]', 'tokenizer.fsq_levels must be a non-empty list'),
    ('tokenizer.channels=[8, 16]', 'tokenizer.decoder_channels must be integers >= 1, one per '
                                   'entry of tokenizer.channels'),
    ('train.batch_size=0', 'train.batch_size must be >= 1, got 0'),
    ('train.window=0', 'train.window must be >= 1, got 0'),
    ('train.epochs=-1', 'train.epochs must be >= 0, got -1'),
    ('train.lr=0', 'train.lr must be a finite number > 0, got 0'),
    ('train.lr=-1e-3', 'train.lr must be a finite number > 0, got -0.001'),
    ('train.start_at_track_start=2', 'train.start_at_track_start must be in [0, 1], got 2'),
    ('decision.min_frames=-1', 'decision.min_frames must be >= 0, got -1'),
])
def test_values_out_of_range_are_refused_at_load(item, message):
    with pytest.raises(ValueError) as info:
        load_config('cpu', parse_overrides([item]))
    assert message in str(info.value)


def test_values_in_range_build_a_model_that_runs():
    # the limits are not stricter than the model: each edge value builds and runs
    import torch
    config = load_config('cpu', parse_overrides([
        'input_size=40', 'classifier.window=1', 'classifier.layers=1', 'classifier.heads=1',
        'classifier.age_max=1', 'classifier.dropout=0', 'tokenizer.kernel_t=1',
        'tokenizer.fsq_levels=[3, 3]', 'decision.min_frames=0']))
    model = PersistenceModel(config).eval()
    with torch.no_grad():
        prob = model(torch.zeros(1, 3, 3, 64, 64, dtype=torch.uint8), torch.zeros(
            1, 3, len(config.classifier.geometry_features)))
    assert torch.isfinite(prob['prob']).all()


def test_yaml_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('classifier:\n  age_max: 0\n')
    with pytest.raises(ValueError, match=r'bad.yaml: classifier.age_max must be >= 1, got 0'):
        load_config(path)
    path.write_text('train:\n  lr: fast\n')
    with pytest.raises(ValueError, match=r"bad.yaml: train.lr: expected float, got 'fast'"):
        load_config(path)
    path.write_text('train: 5\n')
    with pytest.raises(ValueError, match='config.train: expected a mapping, got int'):
        load_config(path)
    # the JSON of a checkpoint goes through the same checks
    data = load_config('cpu').to_dict()
    data['decision']['recheck'] = 'maybe'
    with pytest.raises(ValueError, match='decision.recheck: expected bool'):
        ModelConfig.from_dict(data)


def test_early_decision_reads_decision_options_like_the_config():
    # evaluate --decision hi=9e-1 (a string to YAML) used to raise a TypeError traceback,
    # recheck=maybe acted as true and min_frames=x failed only when a track was decided.
    rule = EarlyDecision(**parse_overrides(['hi=9e-1', 'lo=1e-1', 'min_frames=4'],
                                           '--decision'))
    assert (rule.hi, rule.lo, rule.min_frames) == (pytest.approx(0.9), pytest.approx(0.1), 4)
    assert isinstance(rule.hi, float)
    for item, message in (('recheck=maybe', 'decision.recheck: expected bool (true or false), '
                                            "got 'maybe'"),
                          ('min_frames=x', "decision.min_frames: expected int, got 'x'"),
                          ('min_frames=2.5', 'decision.min_frames: expected int, got 2.5'),
                          ('hi=high', "decision.hi: expected float, got 'high'")):
        with pytest.raises(ValueError) as info:
            EarlyDecision(**parse_overrides([item], '--decision'))
        assert message in str(info.value)
    assert EarlyDecision(recheck=True).recheck is True


def test_learned_filter_checks_its_decision_options():
    # the path of `evaluate --decision` and of the node's model.decision.* parameters: the
    # settings tree, then the factory, on the shipped model
    from persistence_ros.filter_factory import build_filter
    from persistence_ros.overrides import replace_fields
    from persistence_ros.settings import Settings

    def load(**decision):
        return build_filter(replace_fields(Settings(), {
            'model.device': 'cpu', 'filter.ground_plane': [0.0, -1.0, 0.0, 0.0],
            **{f'model.decision.{k}': v for k, v in decision.items()}}))

    filt = load(**parse_overrides(['hi=9e-1'], '--decision'))
    assert filt.decision.hi == pytest.approx(0.9)
    with pytest.raises(ValueError, match="decision.recheck: expected bool .*, got 'maybe'"):
        load(recheck='maybe')
    with pytest.raises(ValueError, match="decision.min_frames: expected int, got 'x'"):
        load(min_frames='x')


def test_shipped_configs_load_unchanged():
    for name in ('cpu', 'gpu'):
        config = load_config(name)
        assert ModelConfig.from_dict(config.to_dict()) == config
    cpu = load_config('cpu')
    assert (cpu.train.lr, cpu.decision.hi, cpu.train.plane_dropout, cpu.tokenizer.fsq_levels) == (
        1e-3, 0.5, 0.5, [8, 5, 5, 5])
    assert load_config('gpu').train.lr == 3e-4
