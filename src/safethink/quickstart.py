"""The quickstart, kept importable under its old name: everything now lives in :mod:`safethink.pipeline`, and
``safethink quickstart`` runs the shipped ``quickstart`` pipeline preset (docs/pipeline.md).

Stages (each cached in the output directory and resumed when run again): ``split`` (the built-in seed set into
train and held-out parts, twin pairs on one side), ``data`` (SCoT and R2D training sets from the offline
structured teacher), ``train`` (a LoRA adapter per method), ``probe`` (the intent probe and the wrapper probe on
the base model's hidden states), ``eval`` (every row of the table on the held-out prompts) and ``report``.
"""

from __future__ import annotations

from .pipeline import *  # noqa: F403 - the public names, as before
from .pipeline import __all__ as _public
from .pipeline import (  # noqa: F401 - private helpers scripts and tests import by these names
    _fitted_on, _negative_count, _negative_options, _probe_sources, _retain_ratio, _spare_pairs, _split_rows,
    _StepProgress,
)

__all__ = list(_public)
