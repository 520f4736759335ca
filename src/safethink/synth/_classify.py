"""Offline category classifier: which policy rule a harmful request falls under.

k-nearest-neighbours over MiniLM embeddings of labelled example requests: each rule's own name,
rule text and examples from the policy file, plus the built-in harmful seed set when installed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..data._policy import Policy
from ..models._embed import Embedder


class CategoryClassifier:
    """Predicts one enabled policy rule id per request."""

    def __init__(self, policy: Policy, embedder: Embedder | None = None, *, k: int = 5,
                 extra_examples: Sequence[tuple[str, str]] = ()):
        self.policy = policy
        self.embedder = embedder or Embedder()
        self.k = k
        examples: list[tuple[str, str]] = []
        for r in policy.active:
            examples.append((f"{r.name}: {r.rule}", r.id))
            examples.extend((e, r.id) for e in r.examples)
        ids = set(policy.ids)
        examples.extend((t, c) for t, c in extra_examples if c in ids)
        self._texts = [t for t, _ in examples]
        self._labels = [c for _, c in examples]
        self._vecs = None

    @classmethod
    def with_seed_examples(cls, policy: Policy, embedder: Embedder | None = None, **kw) -> CategoryClassifier:
        """Adds the built-in harmful seeds (labelled with policy ids) as examples when present."""
        from ..data._loaders import SEEDS_DIR, load_seed_file

        extra: list[tuple[str, str]] = []
        path = SEEDS_DIR / "harmful.jsonl"
        if path.is_file():
            extra = [(r.prompt, r.category) for r in load_seed_file(path, "harmful") if r.category]
        return cls(policy, embedder, extra_examples=extra, **kw)

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """(rule id, vote share) for each text."""
        import numpy as np

        if self._vecs is None:
            self._vecs = self.embedder.encode(self._texts)
        q = self.embedder.encode(texts)
        sims = q @ self._vecs.T
        out = []
        for row in sims:
            top = np.argsort(-row)[: self.k]
            votes: dict[str, float] = defaultdict(float)
            for j in top:
                votes[self._labels[j]] += float(max(row[j], 0.0))
            best = max(votes, key=lambda c: (votes[c], -self.policy.ids.index(c)))
            total = sum(votes.values()) or 1.0
            out.append((best, votes[best] / total))
        return out
