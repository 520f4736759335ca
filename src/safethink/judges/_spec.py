"""Judge spec strings: ``name`` or ``name?key=value&key=value`` (URL query syntax).

A spec names a judge and the arguments it was built with, so a verdict says exactly which judge
gave it and :func:`load_judge` can rebuild that judge from the string alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ..errors import SpecError


def format_judge_spec(name: str, args: Mapping[str, Any]) -> str:
    """``name`` plus the non-default arguments, in a stable order."""
    shown = {k: _arg_text(v) for k, v in sorted(args.items()) if v is not None}
    return f"{name}?{urlencode(shown, safe=':/@,-.')}" if shown else name


def _arg_text(value: Any) -> str:
    spec = getattr(value, "spec", None)  # a ChatModel object is recorded by its spec string
    if isinstance(spec, str):
        return spec
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_judge_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name?k=v&k=v`` into the registry name and string arguments."""
    spec = spec.strip()
    name, _, query = spec.partition("?")
    if not name:
        raise SpecError(f"empty judge name in spec {spec!r}")
    args: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if k in args:
            raise SpecError(f"judge spec {spec!r}: argument {k!r} given twice")
        args[k] = v
    return name, args


def parse_judge_args(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` from the command line into a dict; a pair without ``=`` is an error."""
    args: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"judge argument {pair!r}: expected key=value")
        if key.strip() in args:
            raise SpecError(f"judge argument {key.strip()!r} given twice")
        args[key.strip()] = value
    return args
