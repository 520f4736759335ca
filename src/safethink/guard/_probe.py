"""The ``probe`` guard: a probe (:mod:`safethink.probes`) reads the prompt before a single token is
generated; a request it flags is refused, the rest go to the ``then`` guard.

Guards compose through ``then``: a wrapper probe (``safethink probe fit --target wrapper``) in front of an
intent probe in front of R2D is three guards, each handing what it lets through to the next::

    GUARDS.create("probe", path="wrapper.json", then="probe",
                  then_args={"path": "probe.json", "then": "r2d-pivot"})
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..errors import SafethinkError, SpecError
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn
from ..probes import Probe, load_probe
from ..probes._states import adapter_off
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, refusal, text


@GUARDS.register()
@dataclass
class ProbeGuard(GuardBase):
    """Refuse a request when a probe scores it at or above the threshold; otherwise hand it to the ``then``
    guard (``none``: the model answers as is).

    The probe is fitted on the guarded model (``safethink probe fit``); a probe fitted on another model or
    adapter reads states it has never seen, so that is an error unless ``check_model=False``. With
    ``states="base"`` a probe fitted on the base model guards any adapter on it: the probe reads the
    base model's states (adapter switched off for that one forward pass) and the adapter answers.

    ``route="base"`` makes an intent probe a three-way router for an adapter on a base model: requests the
    probe is sure are benign (below the route threshold) are answered by the base model as is, adapter off;
    those between the two thresholds by the adapter through ``then``; those above are refused. The adapter's
    over-refusal then only reaches the requests the probe is unsure of.

    A wrapper probe (``target="wrapper"``: the request came encoded or inside an attack's template, whatever
    it asks) refuses with the wrapper message and records ``wrapper_score``; an intent probe records
    ``probe_score``. Chained (``then="probe"``), a wrapper probe first leaves the intent probe only requests as
    users write them, which is where telling a harmful request from its same-topic twin is possible at all.
    """

    name: ClassVar[str] = "probe"
    kind: ClassVar[GuardKind] = "filter"

    path: str | None = None
    """A probe file from ``safethink probe fit`` (:meth:`RequestProbe.save`), or a tuned probe directory
    (``safethink probe fit --tune``, :meth:`TunedProbe.save`)."""
    probe: Probe | None = None
    """An in-memory probe instead of ``path``."""
    threshold: float | None = None
    """Override the probe's own threshold."""
    then: str = "none"
    """The guard that handles requests the probe lets through (any registered guard, another probe guard too)."""
    then_args: dict[str, Any] = field(default_factory=dict)
    """Options of the ``then`` guard."""
    message: str | None = None
    """Refusal text; default from prompts.yaml (its ``wrapper`` text for a wrapper probe)."""
    states: Literal["model", "base"] = "model"
    """Read the guarded model's own states, or its base model's (adapter off)."""
    route: Literal["none", "base"] = "none"
    """``base``: the base model (adapter off) answers requests scoring below the route threshold."""
    route_threshold: float | None = None
    """Override the probe's own route threshold (:attr:`RequestProbe.route_threshold`)."""
    check_model: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.path is None) == (self.probe is None):
            raise SpecError("guard 'probe': give exactly one of path= (a probe file) or probe=")
        if self.probe is None:
            self.probe = load_probe(self.path)  # type: ignore[arg-type]
        for name in ("threshold", "route_threshold"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise SpecError(f"guard 'probe': {name} is a probability in [0, 1], got {v}")
        if self.route == "base":
            if self.probe.target != "intent":
                raise SpecError(f"guard 'probe': route='base' sends requests an intent probe is sure are benign to "
                                f"the base model; {self.path or 'this probe'} is a {self.probe.target} probe")
            if self.route_threshold is None and self.probe.route_threshold is None:
                raise SpecError("guard 'probe': route='base' needs a route threshold; this probe file has none "
                                "(refit it with safethink probe fit, or pass route_threshold=)")
        if not isinstance(self.then_args, dict):
            raise SpecError(f"guard 'probe': then_args is a mapping of the {self.then!r} guard's options, "
                            f"got {self.then_args!r}")
        try:
            self.inner = GUARDS.create(self.then, **self.then_args)
        except SafethinkError as e:
            raise SpecError(f"guard 'probe': then={self.then!r}: {e}") from None

    def options(self) -> dict[str, Any]:
        opts = super().options()
        opts.pop("probe")
        opts["then_args"] = {k: v for k, v in self.then_args.items() if k != "probe"}
        return opts

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        probe = self.probe
        assert probe is not None
        base = self.states == "base"
        if self.check_model:
            why = probe.mismatch(model, base=base)
            if why:
                raise SpecError(f"guard 'probe': {why} or pass check_model=False")
        threshold = probe.threshold if self.threshold is None else self.threshold
        cut = -1.0
        if self.route == "base":
            if not getattr(model, "adapter", None):
                raise SpecError(f"guard 'probe': route='base' routes between an adapter and its base model; "
                                f"{model.spec} has no adapter")
            cut = probe.route_threshold if self.route_threshold is None else self.route_threshold
            cut = min(cut, threshold)  # type: ignore[type-var]
        scores = probe.score(model, conversations, batch_size=config.batch_size, base=base)
        low = [i for i, s in enumerate(scores) if s < cut]
        passed = [i for i, s in enumerate(scores) if cut <= s < threshold]
        answered: dict[int, GuardedOutput] = {}
        if low:
            with adapter_off(model, "answer with the base model")():
                answered.update(zip(low, GUARDS.create("none").generate(model, [conversations[i] for i in low],
                                                                        config, progress=progress)))
        if passed:
            answered.update(zip(passed, self.inner.generate(model, [conversations[i] for i in passed], config,
                                                            progress=progress)))
        wrapper = probe.target == "wrapper"
        key = "wrapper" if wrapper else "probe"
        msg = self.message or text("refusal", "wrapper" if wrapper else "default")
        outs = []
        for i, s in enumerate(scores):
            info = {f"{key}_score": s, f"{key}_threshold": threshold}
            if self.route == "base":
                info["probe_route_threshold"] = cut
            if i in answered:
                o = answered[i]
                o.info = {**o.info, **info, **({"answered_by": "base" if s < cut else "adapter"}
                                               if self.route == "base" else {})}
                outs.append(o)
            else:
                outs.append(refusal(msg, action="blocked", **info))
                if progress:
                    progress(1)
        return outs
