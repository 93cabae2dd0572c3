"""``--set KEY=VALUE`` options of the command line, and applying them to core configs."""

import collections.abc
import dataclasses
import functools
import math
import numbers
import typing
from typing import Any, Dict, Sequence

import yaml

_SEQUENCES = (list, tuple, collections.abc.Sequence)  # typing.get_origin of List, Tuple, ...


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


def _type_name(annotation) -> str:
    """Return how an error message names a type: ``float``, ``list of int``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in _SEQUENCES and args:
        return f'{"tuple" if origin is tuple else "list"} of {_type_name(args[0])}'
    if origin is typing.Union:
        return ' or '.join(_type_name(a) for a in args)
    if annotation is bool:
        return 'bool (true or false)'
    if annotation is type(None):
        return 'null'
    return getattr(annotation, '__name__', str(annotation))


def coerce(value, annotation, key: str):
    """
    Return ``value`` as the type ``annotation`` a config field declares, or raise ValueError.

    YAML reads ``1e-3`` as a string and ``maybe`` is no bool, so values are checked against
    the annotation: a float accepts numbers and numeric strings (``'1e-3'``; ints are kept,
    Python's numeric tower), an int accepts integers and integral floats (never 2.5), a bool
    only true/false, a str only strings, a list/tuple a sequence of such elements. Other
    annotations (``Any``, classes) are not checked. The error names ``key``, the value and
    the type expected.
    """
    def fail(detail: str = ''):
        raise ValueError(f'{key}: expected {_type_name(annotation)}, got {value!r}{detail}')

    if annotation is Any:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ValueError:
                continue
        fail()
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(f': {len(args)} elements needed')
            return tuple(coerce(v, a, f'{key}[{i}]') for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [coerce(v, item, f'{key}[{i}]') for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            fail()
        return dict(value) if not args else {k: coerce(v, args[1], f'{key}.{k}')
                                             for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool) or type(value).__name__ == 'bool_':  # numpy's too
            return bool(value)
        fail()
    if annotation is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        fail()
    if annotation is float:
        if isinstance(value, bool):
            fail()
        if isinstance(value, numbers.Real):
            return value
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        fail()
    if annotation is str:
        if isinstance(value, str):
            return value
        fail(' (quote it to give a string)')
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls) -> Dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that does not resolve: not checked
        return {}


def require(ok: bool, key: str, requirement: str, value) -> None:
    """Raise ValueError ``<key> must be <requirement>, got <value>`` unless ``ok``."""
    if not ok:
        raise ValueError(f'{key} must be {requirement}, got {value!r}')


def check_fields(config, where: str) -> None:
    """
    Coerce every field of a dataclass instance to its annotation (``coerce``), in place.

    For ``__post_init__`` of config dataclasses: ``where`` prefixes the keys in messages
    (``train`` gives ``train.lr: expected float, got 'abc'``). A field whose annotation is
    a dataclass (a section) must hold an instance of it.
    """
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        annotation = hints.get(f.name, Any)
        value = getattr(config, f.name)
        key = f'{where}.{f.name}' if where else f.name
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, annotation):
                raise ValueError(f'{key} is a section of the config (fields '
                                 f'{sorted(g.name for g in dataclasses.fields(annotation))}), '
                                 f'got {value!r}')
            continue
        new = coerce(value, annotation, key)
        if new is not value:
            object.__setattr__(config, f.name, new)  # frozen dataclasses too


def replace_fields(config, overrides: Dict[str, object], _prefix: str = ''):
    """
    Return a copy of a (nested) dataclass config with dotted fields replaced.

    ``{'tracker.appearance_gate': 1.0}`` replaces ``config.tracker.appearance_gate``. Every
    value is checked against its field's annotation (``coerce``: ``'1e-3'`` becomes a float,
    ``maybe`` is no bool, 2.5 no int) and the dataclasses validate the new values. An unknown
    key, or a section (``train``) given a value that is not a mapping of its fields, raises
    ValueError naming the fields.
    """
    nested: Dict[str, Dict[str, object]] = {}
    flat: Dict[str, object] = {}
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = _hints(type(config))
    for key, value in overrides.items():
        head, _, rest = key.partition('.')
        if head not in fields:
            raise ValueError(f'unknown field {_prefix + key!r}; fields of '
                             f'{_prefix.rstrip(".") or "the config"}: {sorted(fields)}')
        section = dataclasses.is_dataclass(getattr(config, head))
        if rest and not section:
            raise ValueError(f'{_prefix + head!r} has no fields')
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif section and isinstance(value, dict):  # train={lr: 0.1} sets fields of train
            nested.setdefault(head, {}).update({str(k): v for k, v in value.items()})
        elif section and not isinstance(value, type(getattr(config, head))):
            names = sorted(f.name for f in dataclasses.fields(getattr(config, head)))
            raise ValueError(f'{_prefix + head!r} is a section, not a value (got {value!r}); '
                             f'set its fields, e.g. {_prefix + head}.{names[0]}=...; '
                             f'fields: {names}')
        else:
            flat[head] = coerce(value, hints.get(head, Any), _prefix + head)
    for head, values in nested.items():
        flat[head] = replace_fields(getattr(config, head), values, f'{_prefix}{head}.')
    return dataclasses.replace(config, **flat)
