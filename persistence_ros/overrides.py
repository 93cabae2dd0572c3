"""``--set KEY=VALUE`` options of the command line, and applying them to core configs."""

import dataclasses
from typing import Any, Dict, Sequence

import yaml


def parse_overrides(items: Sequence[str], option: str = '--set') -> Dict[str, object]:
    """Return ``{dotted key: value}`` of ``KEY=VALUE`` strings (values read with safe_load)."""
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key:
            raise ValueError(f'{option} expects KEY=VALUE, got {item!r}')
        out[key.strip()] = yaml.safe_load(value)
    return out


def flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
    """Return ``{dotted name: value}`` of a nested dict (ros__parameters, a config's dict)."""
    out: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(flatten(value, name + '.'))
        else:
            out[name] = value
    return out


def replace_fields(config, overrides: Dict[str, object], _prefix: str = ''):
    """
    Return a copy of a (nested) dataclass config with dotted fields replaced.

    ``{'tracker.appearance_gate': 1.0}`` replaces ``config.tracker.appearance_gate``; the
    dataclasses validate the new values. An unknown key raises ValueError naming the fields.
    """
    nested: Dict[str, Dict[str, object]] = {}
    flat: Dict[str, object] = {}
    names = {f.name for f in dataclasses.fields(config)}
    for key, value in overrides.items():
        head, _, rest = key.partition('.')
        if head not in names:
            raise ValueError(f'unknown field {_prefix + key!r}; fields of '
                             f'{_prefix.rstrip(".") or "the config"}: {sorted(names)}')
        if rest and not dataclasses.is_dataclass(getattr(config, head)):
            raise ValueError(f'{_prefix + head!r} has no fields')
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[head] = value
    for head, values in nested.items():
        flat[head] = replace_fields(getattr(config, head), values, f'{_prefix}{head}.')
    return dataclasses.replace(config, **flat)
