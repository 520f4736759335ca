"""The linear probe: a logistic regression on the guarded model's own hidden state at the end of the prompt
(or the mean in logit space of one such regression per layer over a few layers), kept in a JSON file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..io import atomic_write_text
from ..models import ChatModel, Conversation
from ._base import PROBE_FORMAT, Pool, read_probe_json, same_adapter
from ._states import prompt_states


@dataclass
class RequestProbe:
    """A fitted probe: standardise the state at ``layer`` (at each of the layers, concatenated, when
    ``layer`` is a list), then ``sigmoid(w . x + b)`` is p(harmful).

    A list of layers is an ensemble: one logistic regression per layer, their logits averaged, which is
    one linear model on the concatenated states (each layer's weights divided by the number of layers,
    the mean of their biases), so ``mean``, ``scale`` and ``weight`` hold ``len(layer) * hidden`` values."""

    layer: int | list[int]
    pool: Pool
    mean: list[float]
    scale: list[float]
    weight: list[float]
    bias: float
    threshold: float
    """p(harmful) at or above which a request is refused."""
    model: str
    """The model spec the probe was fitted on (its hidden states are what the weights read)."""
    adapter: str | None = None
    route_threshold: float | None = None
    """p(harmful) below which the probe guard's ``route="base"`` lets the base model answer: the highest
    cut at which at most ``max_fnr`` of the harmful training forms fall below it, out of fold."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Cross-validation results: AUC per layer and per ensemble size, the chosen probe's rates at the threshold, counts."""
    target: str = "intent"
    """What the score is the probability of: ``intent``, a harmful request; ``wrapper``, a request (of any
    intent) inside an attack's template or encoding (see :data:`~safethink.probes.PROBE_TARGETS`)."""

    @property
    def layers(self) -> list[int]:
        """The layers read, in the order of the weights."""
        return list(self.layer) if isinstance(self.layer, list) else [self.layer]

    def probabilities(self, states: Any) -> Any:
        """p(harmful) for states of shape ``(n, hidden)`` taken at :attr:`layer`, or ``(n, len(layers),
        hidden)`` taken at :attr:`layers`."""
        import numpy as np

        x = np.asarray(states, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != len(self.weight):
            raise SpecError(f"probe reads {len(self.layers)} layer(s), {len(self.weight)} values in all; "
                            f"got states of {x.shape[1]}")
        x = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        z = x @ np.asarray(self.weight) + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def mismatch(self, model: ChatModel, *, base: bool = False) -> str | None:
        """Why this probe cannot guard ``model`` (its states, or with ``base`` its base model's), or None."""
        adapter = None if base else getattr(model, "adapter", None)
        if self.model == model.spec and same_adapter(self.adapter, adapter):
            return None
        fitted = self.model + (f" with adapter {self.adapter}" if self.adapter else "")
        here = model.spec + (f" with adapter {adapter}" if adapter else "")
        return (f"the probe was fitted on {fitted}, but the guarded model is {here}; "
                "fit a probe on this model (safethink probe fit)")

    def score(self, model: ChatModel | None, conversations: Sequence[Conversation], *, batch_size: int = 16,
              base: bool = False) -> list[float]:
        """p(harmful) of each conversation under ``model`` (which should be the model it was fitted on;
        ``base``: its base model, with the adapter switched off)."""
        if not conversations:
            return []
        if model is None:
            raise SpecError("a linear probe reads the guarded model's hidden states: pass the model to score()")
        states = prompt_states(model, conversations, layers=self.layers, pool=self.pool, batch_size=batch_size,
                               base=base)
        if states.shape[-1] * len(self.layers) != len(self.weight):
            raise SpecError(f"probe reads hidden states of size {len(self.weight) // len(self.layers)}; "
                            f"{model.spec} has {states.shape[-1]}")
        return [float(p) for p in self.probabilities(states)]

    def save(self, path: str | Path) -> Path:
        """Write the probe as one JSON file (``"format": "safethink-probe/1"``)."""
        path = Path(path)
        atomic_write_text(path, json.dumps({"format": PROBE_FORMAT, **asdict(self)}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> RequestProbe:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"probe file {path} does not exist (fit one with: safethink probe fit ...)")
        probe = read_probe_json(cls, path, PROBE_FORMAT, "probe file", "probe file")
        if not (len(probe.weight) == len(probe.mean) == len(probe.scale)) or not probe.weight:
            raise SpecError(f"{path}: weight, mean and scale must be non-empty and of one length")
        if not probe.layers or len(probe.weight) % len(probe.layers):
            raise SpecError(f"{path}: {len(probe.weight)} weights do not split evenly over layers {probe.layers}")
        return probe
