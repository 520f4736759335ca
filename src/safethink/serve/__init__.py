"""An OpenAI-compatible HTTP server in front of a guarded model.

``create_app(model, guard)`` returns a FastAPI app with ``/v1/chat/completions`` (streaming and
not), ``/v1/models`` and ``/health``; run it with uvicorn or ``safethink serve``.
"""

from ._app import API_KEY_ENV, create_app
from ._batcher import BatchStats, MicroBatcher
from ._cancel import GenerationCancelled

# The public surface. Also importable from here, for safethink's own modules and tests: BatchStats,
# GenerationCancelled, MicroBatcher.
__all__ = [
    "API_KEY_ENV",
    "create_app",
]
