"""The exceptions a refused quantization config raises.

A config is checked in one pass that finds every problem, not only the first. The exception's message lists
them all (the first on the first line, so a one-problem message reads as it always did), and `.errors()` gives
them as data, in the layout pydantic-core uses::

    try:
        fastquant.BitsAndBytesConfig(load_in_4bit=True, llm_int8_threshold="high", bnb_4bit_quant_type="nf5")
    except fastquant.ConfigError as e:
        e.errors()
    # [{'loc': ('BitsAndBytesConfig', 'llm_int8_threshold'), 'type': 'wrong_type',
    #   'msg': "expected a float, got 'high' (str)", 'input': 'high'},
    #  {'loc': ('BitsAndBytesConfig', 'bnb_4bit_quant_type'), 'type': 'not_allowed', ...}]

`loc` is a tuple of keys (list positions as ints), `type` a short name of the problem (`wrong_type`,
`not_allowed`, `missing`, `value_error`, `type_error`, `unknown_method`), `msg` the message without the
location, and `input` the refused value (None when there is none, e.g. for a missing argument).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

__all__ = ["ConfigError", "ConfigTypeError"]


class ConfigError(ValueError):
    """A quantization config was refused; `.errors()` lists every problem found (see the module docs)."""

    def __init__(self, message: str, errors: Iterable[Dict[str, Any]] = ()):
        super().__init__(message)
        self._errors = tuple(dict(e) for e in errors)

    def errors(self) -> List[Dict[str, Any]]:
        """Every problem, in the order found, as new dicts with `loc`, `type`, `msg` and `input`."""
        return [dict(e) for e in self._errors]

    def error_count(self) -> int:
        return len(self._errors)

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", self._errors))


class ConfigTypeError(ConfigError, TypeError):
    """A config error whose first problem is a value of the wrong type or a missing argument: also a TypeError,
    as Python raises for a bad call."""
