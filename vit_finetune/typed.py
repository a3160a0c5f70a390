"""Build typed dataclasses from plain mappings (parsed YAML), validating every key and type.

Errors name the dotted key path, so a user sees `training.learning_rate: expected float, got 'three'`
instead of a failure deep inside training. Numeric strings such as `5e-5` (which YAML 1.1 reads as a
string) are accepted where a number is expected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import reprlib
import types
import typing
from typing import Any, Literal, Mapping


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


_SHORT = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 80, 80, 40
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = 6


def shown(value: Any) -> str:
    """`repr(value)` cut short (about 80 characters per item, 6 items per level, 3 levels): an error message
    stays one readable line whatever the value, even one that aliases expanded to billions of items."""
    return _SHORT.repr(value)


def error_reason(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut at `limit` characters; its type's name when it has none."""
    return " ".join(str(err).split())[:limit] or type(err).__name__


def build_dataclass(cls: type, mapping: Mapping[str, Any] | None, where: str) -> Any:
    """Instantiate dataclass `cls` from `mapping`, coercing each value to its annotated type."""
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(mapping).__name__}")
    values = coerce_fields(cls, mapping, where)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def coerce_fields(cls: type, mapping: Mapping[str, Any], where: str, show_known: bool = True) -> dict[str, Any]:
    """Check `mapping`'s keys against dataclass `cls`'s fields and coerce each value to its annotation."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(mapping) - known)
    if unknown:
        hint = f"; known keys: {sorted(known)}" if show_known else f" (not {cls.__name__} fields)"
        raise ConfigError(f"{where}: unknown key(s) {unknown}{hint}")
    return {key: coerce(value, hints[key], f"{where}.{key}") for key, value in mapping.items()}


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `where`."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(annotation), where)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(annotation), where)
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, typing.get_args(annotation), where)
    if origin is dict or annotation is dict:
        return _expect(value, dict, where)
    if dataclasses.is_dataclass(annotation):
        return build_dataclass(annotation, value, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _coerce_enum(value, annotation, where)
    return _coerce_scalar(value, annotation, where)


def _coerce_union(value: Any, options: tuple, where: str) -> Any:
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: must not be null")
    options = tuple(o for o in options if o is not type(None))
    if len(options) == 1:  # `X | None`: X's own error, with its full key path (`finetune.lora.rank: ...`)
        return coerce(value, options[0], where)
    errors = []
    for option in options:
        try:
            return coerce(value, option, where)
        except ConfigError as err:
            errors.append(str(err).split(": ", 1)[-1])
    raise ConfigError(f"{where}: {'; '.join(errors)}")


def _coerce_literal(value: Any, choices: tuple, where: str) -> Any:
    if value not in choices:
        raise ConfigError(f"{where}: must be one of {list(choices)}, got {shown(value)}")
    return value


def _coerce_enum(value: Any, enum_cls: type, where: str) -> Any:
    allowed = [member.value for member in enum_cls]
    if value is False and "no" in allowed:  # YAML 1.1 reads a bare `no` (eval_strategy: no) as false
        return "no"
    if value not in allowed:
        raise ConfigError(f"{where}: must be one of {allowed}, got {shown(value)}")
    return value


def _coerce_sequence(value: Any, origin: type, args: tuple, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {shown(value)}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        items = [coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
    else:
        item_type = args[0] if args else Any
        items = [coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    return origin(items)


def _coerce_scalar(value: Any, annotation: type, where: str) -> Any:
    if annotation is bool:
        return _expect(value, bool, where)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
        return value
    if annotation is float:
        return _to_float(value, where)
    if annotation is str:
        return _expect(value, str, where)
    return _expect(value, annotation, where)


def _to_float(value: Any, where: str) -> float:
    """A finite float: NaN and inf (YAML `.nan`, `.inf`, or the strings) are refused here, since no setting
    means anything with them and a learning rate of inf trains silently into NaN weights."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None:
        raise ConfigError(f"{where}: expected a number, got {shown(value)}")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {shown(value)}")
    return number


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {shown(value)}")
    return value
