"""The command-line conventions of ``pavenet`` and of the benchmarks' own parsers.

Both the ``pavenet`` subcommands (:mod:`pavenet.cli`) and ``pavenet bench NAME`` (whose parsers
live in :mod:`pavenet.bench`, a layer below the CLI) build their parsers from this module, so that
every command behaves the same:

- numbers are checked when the command line is parsed (:class:`Number` and the ready-made types
  :data:`positive_int` etc.): a bad value is a one-line usage error naming the option, exit 2;
- sizes are ``--size H W`` (:func:`add_size_argument`); one ``WxH`` token (width first, as image
  sizes are usually written, e.g. ``1920x1080``) is accepted as well;
- every option that takes a value shows its default in ``--help`` (:class:`HelpFormatter`;
  a help that already says its default is left alone; flags are off by default);
- a misspelled option, subcommand or choice gets a "did you mean" (:class:`Parser`);
- an unknown argument is reported by the parser that owns it, so a misspelled option of
  ``pavenet predict`` reads ``pavenet predict: error: unrecognized arguments: --sise (did you
  mean --size?)`` (argparse's own ``PROG: error: MESSAGE`` prefix, the one
  :func:`pavenet.cli.main` also gives pavenet's errors).

Torch-free: imported when the command line builds its parsers.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Optional

#: one ``WxH`` token of a size option (the width first)
_WXH = re.compile(r"^(\d+)[xX](\d+)$")


class Number:
    """An argparse ``type``: a number of ``kind`` (int or float) in [``minimum``, ``maximum``].

    A value out of range or not a number raises :class:`argparse.ArgumentTypeError`, which
    argparse reports as ``argument --opt: expected WHAT, got 'TEXT'`` (exit code 2).
    """

    def __init__(self, kind: type, minimum: Optional[float], maximum: Optional[float], what: str) -> None:
        self.kind, self.minimum, self.maximum, self.what = kind, minimum, maximum, what
        self.__name__ = what  # argparse names the type in some messages

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}") from None
        if (not math.isfinite(value) or (self.minimum is not None and value < self.minimum)
                or (self.maximum is not None and value > self.maximum)):
            raise argparse.ArgumentTypeError(f"expected {self.what}, got {text!r}")
        return value

    def __repr__(self) -> str:
        return f"Number({self.what})"


#: an integer >= 1
positive_int = Number(int, 1, None, "an integer >= 1")
#: an integer >= 0
non_negative_int = Number(int, 0, None, "an integer >= 0")
#: a finite number >= 0
non_negative_float = Number(float, 0.0, None, "a number >= 0")
#: a finite number > 0 (the smallest float above 0 counts)
positive_float = Number(float, 5e-324, None, "a number > 0")
#: a number in [0, 1] (scores, thresholds)
unit_float = Number(float, 0.0, 1.0, "a number between 0 and 1")


def int_between(lo: int, hi: int) -> Number:
    """An integer in [lo, hi]."""
    return Number(int, lo, hi, f"an integer from {lo} to {hi}")


def add_size_argument(parser: argparse.ArgumentParser, *flags: str, default: Optional[Sequence[int]],
                      help: str, minimum: int = 1) -> argparse.Action:
    """``--size H W`` (two integers >= ``minimum``; one ``WxH`` token is accepted too). The value
    is a list ``[H, W]`` (or ``default``)."""
    kind = Number(int, minimum, None, f"an integer >= {minimum}")
    action = parser.add_argument(*(flags or ("--size",)), type=kind, nargs=2, metavar=("H", "W"),
                                 default=default, help=help)
    action.size_option = True  # read by Parser._normalise_sizes
    return action


def format_default(value: Any) -> str:
    """A default as ``--help`` shows it: lists space-separated (as they are typed), None as none."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return " ".join(format_default(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs keep their lines (each line is wrapped on its own; an indented
    line, such as an example command, is kept as it is); every optional option that takes a
    value ends its help with ``(default: ...)`` unless the help already mentions its default."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                lines.append(indent + line)
            else:
                lines.extend(textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.help is argparse.SUPPRESS or not action.option_strings or action.nargs == 0
                or action.required or action.default is argparse.SUPPRESS or "default" in text.lower()):
            return text
        shown = format_default(action.default).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def closest(word: str, candidates: Sequence[str]) -> Optional[str]:
    """The candidate closest to ``word`` (difflib), or None when none is close."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with pavenet's conventions (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter):
            kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Optional[Sequence[str]] = None,
                         namespace: Optional[argparse.Namespace] = None):
        args = self._normalise_sizes(list(sys.argv[1:] if args is None else args))
        self._raw_args = args
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(self.unrecognized(extras))
        return namespace, extras

    def _normalise_sizes(self, args: list[str]) -> list[str]:
        """``--size WxH`` and ``--size=WxH`` -> ``--size H W`` for this parser's size options."""
        out: list[str] = []
        k = 0
        while k < len(args):
            flag, eq, value = args[k].partition("=")
            action = self._option_string_actions.get(flag) if flag.startswith("-") else None
            if getattr(action, "size_option", False):
                value = value if eq else (args[k + 1] if k + 1 < len(args) else "")
                match = _WXH.match(value)
                if match:
                    out += [flag, match[2], match[1]]
                    k += 1 if eq else 2
                    continue
            out.append(args[k])
            k += 1
        return out

    def unrecognized(self, extras: Sequence[str]) -> str:
        """argparse's message for unknown arguments, with the closest option of this parser."""
        message = f"unrecognized arguments: {' '.join(extras)}"
        options = [s for s in self._option_string_actions if s.startswith("--")]
        hints = [closest(e.split("=", 1)[0], options) for e in extras if e.startswith("--")]
        hints = list(dict.fromkeys(h for h in hints if h))
        return message + (f" (did you mean {' or '.join(hints)}?)" if hints else "")

    def _unknown_flag_before(self, value: Any) -> Optional[str]:
        """The unknown ``--flag`` just before ``value`` on the command line (its value, taken
        for a positional argument), or None."""
        raw = getattr(self, "_raw_args", [])
        k = raw.index(value) if value in raw else 0
        flag = raw[k - 1].split("=", 1)[0] if k > 0 else ""
        known = any(option.startswith(flag) for option in self._option_string_actions)
        return flag if flag.startswith("--") and not known else None

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's invalid-choice error, with the closest choice; a positional choice that
        is the value of a misspelled option reports the option (with its closest spelling)."""
        if action.choices is not None and value not in action.choices:
            flag = None if action.option_strings else self._unknown_flag_before(value)
            if flag:
                self.error(self.unrecognized([flag, str(value)]))
            names = ", ".join(repr(c) for c in action.choices)
            hint = closest(str(value), [str(c) for c in action.choices])
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {names})"
                                                 + (f"; did you mean {hint!r}?" if hint else ""))


def example_epilog(*lines: str) -> str:
    """An ``epilog`` of example command lines (kept as written by :class:`HelpFormatter`)."""
    return "example{}:\n{}".format("s" if len(lines) > 1 else "", "\n".join(f"  {line}" for line in lines))
