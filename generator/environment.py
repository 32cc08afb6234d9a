"""Reading typed values from ``STOREOPS_*`` environment variables, with errors that name them.

Shared by the generator's settings and the service's: ``Config 'X' has value 'Y'. Not a valid
bool.`` reads the same wherever a setting lives.
"""

from __future__ import annotations

from collections.abc import Mapping

from generator.errors import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(env: Mapping[str, str], key: str, default: bool, *, error: type[Exception] = ConfigError) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise error(f"{key} has value {raw!r}. Not a valid bool.")


def integer(env: Mapping[str, str], key: str, default: int, *, low: int | None = None,
            error: type[Exception] = ConfigError) -> int:
    raw = env.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise error(f"{key} has value {raw!r}. Not an integer.") from None
    _check_range(key, raw, value, low, None, error)
    return value


def number(env: Mapping[str, str], key: str, default: float, *, low: float | None = None,
           high: float | None = None, error: type[Exception] = ConfigError) -> float:
    raw = env.get(key)
    if raw is None:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise error(f"{key} has value {raw!r}. Not a number.") from None
    _check_range(key, raw, value, low, high, error)
    return value


def _check_range(key: str, raw: str, value: float, low: float | None, high: float | None,
                 error: type[Exception]) -> None:
    if low is not None and high is not None and not low <= value <= high:
        raise error(f"{key} has value {raw!r}. Must be between {low:g} and {high:g}.")
    if low is not None and value < low:
        bound = "Must not be negative." if low == 0 else f"Must be at least {low:g}."
        raise error(f"{key} has value {raw!r}. {bound}")
