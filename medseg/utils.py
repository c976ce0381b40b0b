"""Small helpers shared by every layer: option checking with the parameter's name."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from monai.utils import look_up_option

__all__ = ["check_option"]

E = TypeVar("E", bound=Enum)


def check_option(value: str | E, options: type[E], name: str) -> E:
    """Return the member of ``options`` named by ``value`` (MONAI's ``look_up_option``).

    Raises:
        ValueError: naming the parameter, the value given and the accepted values.
    """
    try:
        return options(look_up_option(value, options))
    except ValueError:
        accepted = ", ".join(repr(o.value) for o in options)
        raise ValueError(f"{name} must be one of {accepted}, got {value!r}.") from None
