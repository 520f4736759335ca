"""lm-evaluation-harness tasks shipped with safethink, to measure capability retention of a served model.

``TASK_DIR`` is the folder to pass to lm-eval's ``--include_path``; it holds ``safethink_basics``
(20 short questions with exact answers, scored by ``exact_match`` and ``contains``). The files are
read by lm-eval itself (``tasks.py`` is loaded by path, without importing safethink), so the task
runs in any environment that has lm-eval and ``datasets``. See docs/serve.md.
"""

from __future__ import annotations

from pathlib import Path

TASK_DIR = Path(__file__).resolve().parent
TASKS = ("safethink_basics",)
