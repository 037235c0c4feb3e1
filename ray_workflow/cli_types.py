"""Argument types for numeric flags: a NaN, an infinity, or a sign or zero that makes no sense is refused
by the parser itself, in one line that names the flag and the value (exit code 2)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _whole(value: float, text: str) -> int:
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(value)


def _checked(convert: Callable[[str], float | int], minimum: float, inclusive: bool) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        value = convert(text)
        if value < minimum or (value == minimum and not inclusive):
            bound = "at least" if inclusive else "more than"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bound} {minimum:g}")
        return value

    return parse


non_negative_float = _checked(_number, 0, inclusive=True)
positive_float = _checked(_number, 0, inclusive=False)
non_negative_int = _checked(lambda text: _whole(_number(text), text), 0, inclusive=True)
positive_int = _checked(lambda text: _whole(_number(text), text), 1, inclusive=True)


def seed(text: str) -> int:
    """A searcher's seed: a whole number that numpy and Optuna take, 0 to 2**32 - 1."""
    value = _whole(_number(text), text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is a whole number from 0 to {2**32 - 1}")
    return value
