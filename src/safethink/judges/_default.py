"""``default``: the most accurate judge that runs offline, by measured agreement with the human
labels on the XSTest completions (benchmarks/judges.py; numbers in BENCHMARKS.md)."""

from __future__ import annotations

from ._base import JUDGES
from ._classifier import RefusalClassifierJudge


@JUDGES.register()
class DefaultJudge(RefusalClassifierJudge):
    """The learned refusal classifier with its shipped head and threshold."""

    name = "default"
