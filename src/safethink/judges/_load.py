"""Build a judge from a spec string or a name plus arguments."""

from __future__ import annotations

from typing import Any

from ._base import JUDGES, Judge
from ._spec import parse_judge_spec


def load_judge(spec: str, **args: Any) -> Judge:
    """``load_judge("strongreject?model=openai:m@http://h/v1")`` or ``load_judge("default")``.

    Keyword ``args`` are added to those in the spec (giving one twice is an error).
    """
    name, spec_args = parse_judge_spec(spec)
    dup = set(spec_args) & set(args)
    if dup:
        from ..errors import SpecError

        raise SpecError(f"judge spec {spec!r}: {', '.join(sorted(dup))} given twice")
    return JUDGES.create(name, **spec_args, **args)
