"""How a setting is declared, checked and shown: the machinery behind the declarations in config.py.

A setting is a field of a frozen dataclass made with `setting(default, help, ...)`; `declared(cls)` lists a
class's settings with their flag names, types and bounds, `settle` checks an instance, and `build` makes one
from keywords, as the command line, the Python API and the HTTP API do.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import sys
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any

from charnn.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """How one setting is checked and shown; its name, default and type are those of its dataclass field."""

    help: str
    choices: tuple[str, ...] = ()
    ge: float | None = None  # bounds: at least (ge), above (gt), at most (le), below (lt)
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    hint: str = ""  # advice added to the message when the check fails
    shown_default: str = ""  # how --help and the docs show a default that is not a plain value
    group: str = ""  # the section of --help it is listed in
    aliases: tuple[str, ...] = ()  # older flag spellings, still accepted (also as Python keywords)
    old_values: tuple[tuple[str, str], ...] = ()  # (older spelling, value) pairs, still accepted
    # Turns the command line's text into the value, where int() or float() will not do.
    parse: Callable[[str], Any] | None = None
    resumable: bool = False  # a resumed run may change it: it decides when to stop or how to report
    exclusive: str = ""  # flags sharing this name cannot be given together on the command line
    commands: tuple[str, ...] = ()  # the commands taking it, where not all of its class's commands do
    flag: bool = True  # False: set by charnn itself, not by a flag

    @property
    def bounds(self) -> dict[str, float]:
        """The bounds that are set, by name (ge, gt, le, lt), as pydantic's Field takes them."""
        named = {"ge": self.ge, "gt": self.gt, "le": self.le, "lt": self.lt}
        return {k: v for k, v in named.items() if v is not None}


_FLOAT_MAX = sys.float_info.max
# What torch.manual_seed takes: a seed setting declares these bounds, so a bigger one is a clear error.
SEED_BOUNDS = {"ge": -(2**63), "le": 2**64 - 1}


def setting(default: Any, help: str, **how: Any) -> Any:
    """Declare a setting: a dataclass field with its default and how it is checked and shown.

    A callable default is called each time a config is built (for defaults read from the environment)."""
    metadata = {"setting": Setting(help, **how)}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Declared:
    """One declared setting, as the command line, the Python API and the HTTP API see it."""

    name: str
    kind: type  # bool, int, float or str
    optional: bool  # None is allowed: the setting is unset
    how: Setting
    factory: Callable[[], Any]

    @property
    def default(self) -> Any:
        return self.factory()

    @property
    def flag(self) -> str:
        """`--top-k` for top_k; a switch that is on by default is turned off with `--no-NAME`."""
        prefix = "--no-" if self.kind is bool and self.default is True else "--"
        return prefix + self.name.replace("_", "-")

    @property
    def alias_names(self) -> tuple[str, ...]:
        """The older spellings as Python keywords."""
        return tuple(a.removeprefix("--").replace("-", "_") for a in self.how.aliases)

    def shown_default(self) -> str:
        """The default as --help and docs/cli.md show it."""
        if self.how.shown_default:
            return self.how.shown_default
        if self.kind is bool:
            return "off"
        return "none" if self.default is None else str(self.default)

    def takes(self, command: str, class_commands: tuple[str, ...]) -> bool:
        return self.how.flag and command in (self.how.commands or class_commands)

    def settle(self, value: Any) -> Any:
        """The value in its plain form (an older spelling replaced; from Python, a path as text, a NumPy
        number as an int or float, a duration as the command line writes it), or ConfigError saying what is
        wrong with it."""
        value = self.plain(value)
        problem = self.problem(value)
        if problem:
            hint = f" ({self.how.hint})" if self.how.hint else ""
            raise ConfigError(f"{self.flag} {problem}, got {_shown(value)}{hint}")
        return value

    def plain(self, value: Any) -> Any:
        if isinstance(value, str):
            value = dict(self.how.old_values).get(value, value)
            if not self.how.parse or self.kind is str:
                return value
            try:
                return self.how.parse(value)
            except ConfigError as e:
                raise ConfigError(f"{self.flag}: {e}") from None
        if self.kind is str and isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, bool | int | float) or not isinstance(value, numbers.Real):
            return value
        if self.kind is int and isinstance(value, numbers.Integral):
            return int(value)
        return float(value) if self.kind is float else value

    def problem(self, value: Any) -> str:
        """What is wrong with `value` for this setting ("" when nothing is)."""
        if value is None:
            return "" if self.optional else "must be given"
        if self.kind is bool:
            return "" if isinstance(value, bool) else "must be true or false"
        if self.kind is str:
            if not isinstance(value, str):
                return "must be text"
            if self.how.choices and value not in self.how.choices:
                return f"must be one of {', '.join(self.how.choices)}"
            return ""
        if isinstance(value, bool) or not isinstance(value, int if self.kind is int else (int, float)):
            return "must be an integer" if self.kind is int else "must be a number"
        if isinstance(value, int) and self.kind is float and abs(value) > _FLOAT_MAX:
            return "must be a finite number"  # no float holds it
        if isinstance(value, float) and not math.isfinite(value):  # an int of any size is finite
            return "must be a finite number"
        return self._bounds_problem(value)

    def _bounds_problem(self, value: float) -> str:
        h, bounds = self.how, self.how.bounds
        fits = (h.ge is None or value >= h.ge) and (h.gt is None or value > h.gt)
        fits = fits and (h.le is None or value <= h.le) and (h.lt is None or value < h.lt)
        if fits:
            return ""
        if bounds.keys() & {"ge", "gt"} and bounds.keys() & {"le", "lt"}:
            if self.kind is int and h.ge is not None and h.le is not None:
                return f"must be between {_number(h.ge)} and {_number(h.le)}"
            left = f"[{_number(h.ge)}" if h.ge is not None else f"({_number(h.gt)}"
            right = f"{_number(h.le)}]" if h.le is not None else f"{_number(h.lt)})"
            return f"must be in {left}, {right}"
        if h.ge is not None:
            return "must be 0 or more" if h.ge == 0 else f"must be at least {_number(h.ge)}"
        if h.gt is not None:
            return "must be positive" if h.gt == 0 else f"must be above {_number(h.gt)}"
        return f"must be at most {_number(h.le)}" if h.le is not None else f"must be below {_number(h.lt)}"


def _shown(value: Any) -> str:
    """A value in a message: its repr, cut short; for an object of another kind, only its type."""
    if value is not None and not isinstance(value, str | numbers.Real):
        return f"a {type(value).__name__}"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _number(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{int(x):,}" if x.is_integer() else f"{x:g}"


def _kind(annotation: Any) -> tuple[type, bool]:
    """(bool/int/float/str, whether None is allowed) of a field's type annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:
        return args[0], True
    return annotation, False


@cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The settings declared in dataclass `cls`, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if "setting" not in f.metadata:
            continue
        kind, optional = _kind(hints[f.name])
        factory = f.default_factory if f.default is MISSING else (lambda d=f.default: d)
        out.append(Declared(f.name, kind, optional, f.metadata["setting"], factory))
    return tuple(out)


def settle(config: object, skip: tuple[str, ...] = ()) -> None:
    """Check every declared setting of a frozen dataclass instance (but those in `skip`), putting older
    spellings of values into their current form; raises ConfigError naming the flag."""
    for d in declared(type(config)):
        if d.name not in skip:
            object.__setattr__(config, d.name, d.settle(getattr(config, d.name)))


def check_exclusive(cls: type, given: dict[str, Any]) -> None:
    """ConfigError where settings of `cls` that the command line refuses together are all given (None: not
    given), so the Python API keeps the same rule."""
    groups: dict[str, list[Declared]] = {}
    for d in declared(cls):
        if d.how.exclusive and given.get(d.name) is not None:
            groups.setdefault(d.how.exclusive, []).append(d)
    for clash in groups.values():
        if len(clash) > 1:
            raise ConfigError(f"{' and '.join(d.flag for d in clash)} cannot be given together; give one")


@cache
def _names(cls: type) -> dict[str, str]:
    """Every keyword a settings class takes (older spellings too), to its field's name."""
    names: dict[str, str] = {}
    for d in declared(cls):
        names.update({d.name: d.name, **dict.fromkeys(d.alias_names, d.name)})
    return names


def build(cls: type, given: dict[str, Any]) -> Any:
    """An instance of settings class `cls` from keywords (older spellings accepted; None: not given)."""
    (config,) = build_each(given, cls)
    return config


def build_each(given: dict[str, Any], *classes: type) -> tuple:
    """One instance of each settings class, each taking its own keywords from `given`; unknown keywords are
    refused, None means not given."""
    taken: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in given.items():
        owners = [i for i, cls in enumerate(classes) if key in _names(cls)]
        if not owners:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            taken[owners[0]][_names(classes[owners[0]])[key]] = value
    return tuple(cls(**kwargs) for cls, kwargs in zip(classes, taken, strict=True))


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `10m`, `2h` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90s, 10m or 2h)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if value <= 0:
        raise ConfigError(f"a duration must be positive, got {text!r}")
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting only `choices`."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse
