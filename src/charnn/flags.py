"""The command line's flags, built from the settings declared in config.py, and its parsing: argparse's,
with a suggestion for a mistyped flag and `--flag=--` read as the text it is."""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable, Sequence
from typing import Any

from charnn.config import command_settings
from charnn.declare import Declared, declared
from charnn.errors import CharnnError

_GROUPS = ("data", "model", "optimisation", "run")  # the order of train's --help sections


def help_text(d: Declared) -> str:
    """A flag's help: the declaration's line, its default, and its older names."""
    older = f"; {', '.join(d.how.aliases)} is its older name" if d.how.aliases else ""
    return f"{d.how.help} (default: {d.shown_default()}{older})"


def _parse_with(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except CharnnError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def add_settings(parser: argparse.ArgumentParser, command: str, choices: dict | None = None) -> None:
    """A flag for every setting `command` takes (see config.command_settings), parsed to None when not given,
    so that a preset's, a saved run's or the declared default applies."""
    groups = {name: parser.add_argument_group(name) for name in _GROUPS} if command == "train" else {}
    exclusive: dict[str, Any] = {}
    for d in command_settings(command):
        target = groups.get(d.how.group, parser)
        if d.how.exclusive:
            if d.how.exclusive not in exclusive:
                exclusive[d.how.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[d.how.exclusive]
        kwargs: dict[str, Any] = {"dest": d.name, "default": None, "help": help_text(d)}
        if d.kind is bool:
            kwargs["action"] = "store_false" if d.default is True else "store_true"
        else:
            kwargs["action"] = _Value
            kwargs["type"] = _parse_with(d.how.parse) if d.how.parse else d.kind
            allowed = (choices or {}).get(d.name, d.how.choices)
            if allowed:
                kwargs["choices"] = (*allowed, *(old for old, _ in d.how.old_values))
                kwargs["metavar"] = "{" + ",".join(allowed) + "}"
        target.add_argument(d.flag, *d.how.aliases, **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict:
    """The values of `cls`'s settings on the command line (None where not given)."""
    return {d.name: getattr(args, d.name) for d in declared(cls) if hasattr(args, d.name)}


def switch(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    parser.add_argument(flag, action="store_true", help=f"{help} (default: off)")


class _Value(argparse.Action):
    """Stores a setting's value. argparse (Python 3.11) takes the value of `--flag=--` for the end of the
    options and hands over an empty list: it is the text `--`, converted and checked as any value is."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values == []:
            try:
                values = self.type("--") if self.type else "--"
            except (TypeError, ValueError, argparse.ArgumentTypeError):
                raise argparse.ArgumentError(self, "invalid value: '--'") from None
            if self.choices is not None and values not in self.choices:
                allowed = ", ".join(repr(c) for c in self.choices)
                raise argparse.ArgumentError(self, f"invalid choice: '--' (choose from {allowed})")
        setattr(namespace, self.dest, values)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line parsed; arguments its command does not take are refused with that command's usage
    (argparse's own error shows the top level's), naming the nearest of its flags to a mistyped one. Each
    command's parser is its `command_parser` default."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = args.command_parser
        # names compared without their dashes, which would make any two flags look alike
        flags = {flag.lstrip("-"): flag for action in command._actions for flag in action.option_strings}
        typed = [u.split("=", 1)[0].lstrip("-") for u in unknown if u.startswith("-")]
        near = [m for t in typed for m in difflib.get_close_matches(t, flags, n=1, cutoff=0.75) if m != t]
        hint = f"; did you mean {flags[near[0]]}?" if near else ""
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args
