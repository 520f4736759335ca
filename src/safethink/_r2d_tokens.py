"""The R2D special tokens: the pivot after each reasoning step and the tags around the reasoning.

They are part of the text format (``safethink.data`` parses them), of the tokenizer (training adds them)
and of streaming (the mock model emits each as one piece), so they sit below every package that uses them.
"""

from __future__ import annotations

PIVOT_SAFE = "[SAFE]"
PIVOT_UNSAFE = "[UNSAFE]"
PIVOT_RETHINK = "[RETHINK]"
PIVOTS = (PIVOT_SAFE, PIVOT_UNSAFE, PIVOT_RETHINK)
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
R2D_SPECIAL_TOKENS = (*PIVOTS, THINK_OPEN, THINK_CLOSE)
"""Added to the tokenizer as special tokens for R2D training; ids are always looked up by string."""
