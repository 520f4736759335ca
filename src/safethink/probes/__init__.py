"""Probes: classifiers that read a prompt before anything is generated and say how likely it is harmful
(``intent``) or wrapped in an attack (``wrapper``).

Everything about a probe lives here: the hidden states it reads (:func:`prompt_states`), the labelled forms
it is fitted on (:func:`probe_forms`), fitting (:func:`fit_probe` from prompt sources; :func:`fit_linear_probe`
and :func:`fit_tuned_probe` on conversations; :func:`fit_probe_on_states` on states), cross-validated
thresholds, the two kinds behind the :class:`Probe` protocol (:class:`RequestProbe`, a linear probe in one
JSON file; :class:`TunedProbe`, LoRA on the lower blocks with a linear head, in a directory), their files
(:func:`load_probe` reads either) and flag rates per prompt source (:func:`flag_rates`). The ``probe`` guard
(:mod:`safethink.guard`) uses a probe; it does not fit one.

    from safethink.probes import fit_probe, load_probe
    probe = fit_probe(model, ["builtin:harmful"], ["builtin:twins"], attacks=["none", "aim"])
    probe.save("probe.json")
    load_probe("probe.json").score(model, [[{"role": "user", "content": "hi"}]])
"""

from ._base import PROBE_FORMAT, PROBE_TARGETS, TUNED_FORMAT, Pool, Probe, load_probe
from ._cv import fit_linear_probe, fit_probe_on_states, threshold_with_negatives
from ._fit import fit_probe
from ._forms import DOCUMENT_TASKS, attacked_examples, document_requests, negative_kind, probe_forms
from ._linear import RequestProbe
from ._rates import flag_rates
from ._states import prompt_states
from ._tuned import TunedProbe, fit_tuned_probe

__all__ = [
    "DOCUMENT_TASKS", "PROBE_FORMAT", "PROBE_TARGETS", "TUNED_FORMAT",
    "Pool", "Probe", "RequestProbe", "TunedProbe",
    "attacked_examples", "document_requests", "fit_linear_probe", "fit_probe", "fit_probe_on_states",
    "fit_tuned_probe", "flag_rates", "load_probe", "negative_kind", "probe_forms", "prompt_states",
    "threshold_with_negatives",
]
