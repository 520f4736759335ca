"""The LLM teacher: any OpenAI-compatible endpoint writes SCoT verdicts or R2D steps as JSON,
validated against the policy, repaired when malformed, and (R2D) re-tagged step by step.

A request that still fails after the HTTP retries and the repairs is a :class:`TeachFailure`
(:meth:`LLMTeacher.attempt`); the teacher never fills in for itself. What happens to failed records
is the builder's decision (fail the build, or ``fallback="structured"``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..data._policy import Policy
from ..errors import BackendError
from ._client import ChatClient
from ._types import TEACHERS, PivotName, R2DTrace, SCoTReasoning, TeachFailure, TeachRequest, TeacherStats

_SCOT_SYSTEM = """You are a safety annotator. Given a user request, check it against each rule of this policy:
{rules}
Reply with only a JSON object:
{{"intent": "<the request's real intent in under ten words>",
 "verdicts": [{{"category": "<rule id>", "violated": true|false, "reason": "<why, when violated>"}}, ... one per rule id above, in order],
 "refusal": "<for a violating request: a short refusal that names the violated rule ids; else null>"}}
Look past role play, hypotheticals, persuasion and odd wording to what is actually asked."""

_R2D_SYSTEM = """You are a careful assistant that reasons step by step about safety before answering.
Policy rules:
{rules}
Write 2-5 short reasoning steps about the user's request. After each step give a pivot label:
SAFE (the reasoning so far is safe to continue), UNSAFE (this step's content or direction would be harmful),
RETHINK (something needs reconsidering). Do not write the labels inside the step text.
Reply with only a JSON object:
{{"steps": [{{"text": "<step>", "pivot": "SAFE"|"UNSAFE"|"RETHINK"}}, ...],
 "answer": "<for a harmful request: a refusal that names the broken rule ids; for a safe request: null>",
 "categories": ["<violated rule ids>"]}}"""

_RETAG_SYSTEM = """You are a safety guard. For each numbered reasoning step an assistant wrote about the request
below, label the step: SAFE if its content is harmless, UNSAFE if its content or direction would help cause
harm, RETHINK only if the step itself notices a risk and turns the reasoning around.
Reply with only a JSON object: {"labels": ["SAFE"|"UNSAFE"|"RETHINK", ... one per step]}"""


class _Labels(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[PivotName]


def _rules_text(policy: Policy) -> str:
    return "\n".join(f"- {r.id}: {r.rule}" for r in policy.active)


def _user_text(req: TeachRequest) -> str:
    note = ("The dataset labels this request HARMFUL: at least one rule is violated."
            if req.label == "harmful" else "The dataset labels this request SAFE: answer it.")
    return f"Request:\n<<<\n{req.prompt}\n>>>\n{note}"


class HeuristicRetagger:
    """Offline re-tagging: benign requests are SAFE throughout; in harmful ones only the first
    RETHINK survives (teachers over-use it) and the step after a refusal decision is SAFE."""

    name = "heuristic"

    def retag(self, req: TeachRequest, trace: R2DTrace) -> list[PivotName]:
        if req.label == "benign":
            return ["SAFE"] * len(trace.steps)
        out: list[PivotName] = []
        seen_rethink = False
        for s in trace.steps:
            p: PivotName = s.pivot
            if p == "RETHINK":
                p = "SAFE" if seen_rethink else "RETHINK"
                seen_rethink = True
            out.append(p)
        return out


class LLMRetagger:
    """A guard model labels every step's pivot (the R2D reference re-tagged this way)."""

    name = "llm"

    def __init__(self, client: ChatClient, max_repairs: int = 2):
        self.client = client
        self.max_repairs = max_repairs

    def retag(self, req: TeachRequest, trace: R2DTrace) -> list[PivotName]:
        steps = "\n".join(f"{i + 1}. {s.text}" for i, s in enumerate(trace.steps))
        msgs = [{"role": "system", "content": _RETAG_SYSTEM},
                {"role": "user", "content": f"Request:\n<<<\n{req.prompt}\n>>>\nSteps:\n{steps}"}]

        def check(obj: _Labels) -> None:
            if len(obj.labels) != len(trace.steps):
                raise ValueError(f"expected {len(trace.steps)} labels, one per step, got {len(obj.labels)}")

        obj, _ = self.client.structured(msgs, _Labels, check=check, max_repairs=self.max_repairs)
        return list(obj.labels)


@TEACHERS.register("openai")
class LLMTeacher:
    """Teacher over an OpenAI-compatible endpoint (``openai:<model>@<url>``)."""

    name = "openai"

    def __init__(self, policy: Policy, model: str, base_url: str, *, concurrency: int = 4, max_repairs: int = 2,
                 retag: Literal["none", "heuristic", "teacher"] | str = "teacher",
                 client: ChatClient | None = None, **client_options):
        """``client_options`` go to :class:`ChatClient` (``timeout_s``, ``max_retries``, ``api_key``, ...)."""
        self.policy = policy
        self.spec = f"openai:{model}@{base_url}"
        self.client = client or ChatClient(model, base_url, **client_options)
        self.concurrency = max(1, concurrency)
        self.max_repairs = max_repairs
        self.stats = TeacherStats()
        self._lock = threading.Lock()
        if retag == "none":
            self.retagger = None
        elif retag == "heuristic":
            self.retagger = HeuristicRetagger()
        elif retag == "teacher":
            self.retagger = LLMRetagger(self.client, max_repairs)
        else:  # another endpoint as the guard: openai:<model>@<url>
            from ..models import parse_model_spec

            ms = parse_model_spec(retag)
            if ms.kind != "openai":
                raise BackendError(f"retag model must be an openai:<model>@<url> spec, got {retag!r}")
            self.retagger = LLMRetagger(ChatClient(ms.target, ms.base_url or ""), max_repairs)

    # ------------------------------------------------------------ plumbing
    def attempt(self, method: Literal["scot", "r2d"], requests: Sequence[TeachRequest]
                ) -> list[SCoTReasoning | R2DTrace | TeachFailure]:
        """One output per request, in order: the reasoning, or a :class:`TeachFailure` for a request
        that still failed after the HTTP retries and the repairs (the others are unaffected)."""
        one = self._scot_one if method == "scot" else self._r2d_one

        def safe(req: TeachRequest) -> SCoTReasoning | R2DTrace | TeachFailure:
            try:
                return one(req)
            except BackendError as e:  # EndpointError, StructuredOutputError, a rejected request
                self._count(error=f"{req.item_id}: {e}")
                return TeachFailure(req.item_id, f"{type(e).__name__}: {e}", e)

        if self.concurrency == 1 or len(requests) <= 1:
            return [safe(r) for r in requests]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(safe, requests))

    def _all(self, method: Literal["scot", "r2d"], requests: Sequence[TeachRequest]) -> list:
        outs = self.attempt(method, requests)
        for o in outs:
            if isinstance(o, TeachFailure):
                raise o.cause if o.cause is not None else BackendError(o.error)
        return outs

    def _count(self, repairs: int = 0, error: str = "") -> None:
        with self._lock:
            self.stats.calls += 1
            self.stats.repairs += repairs
            if error:
                self.stats.failures += 1
                if len(self.stats.errors) < 20:
                    self.stats.errors.append(error)

    # ------------------------------------------------------------ SCoT
    def scot(self, requests: Sequence[TeachRequest]) -> list[SCoTReasoning]:
        """Reasoning for every request; the first failure is raised (see :meth:`attempt`)."""
        return self._all("scot", requests)

    def _scot_one(self, req: TeachRequest) -> SCoTReasoning:
        ids = self.policy.ids

        def check(obj: SCoTReasoning) -> None:
            got = [v.category for v in obj.verdicts]
            missing = [i for i in ids if i not in got]
            unknown = [c for c in got if c not in ids]
            if missing or unknown:
                raise ValueError(f"verdicts must have exactly the rule ids {ids}; missing {missing}, unknown {unknown}")
            if req.label == "harmful":
                if not obj.violated:
                    raise ValueError("the request is harmful: mark at least one rule as violated, with a reason")
                if not (obj.refusal or "").strip():
                    raise ValueError("a violating request needs a refusal that names the violated rule ids")

        msgs = [{"role": "system", "content": _SCOT_SYSTEM.format(rules=_rules_text(self.policy))},
                {"role": "user", "content": _user_text(req)}]
        obj, repairs = self.client.structured(msgs, SCoTReasoning, check=check, max_repairs=self.max_repairs)
        self._count(repairs)
        if req.label == "benign":  # the dataset label is authoritative for retain examples
            obj = obj.model_copy(update={"verdicts": [v.model_copy(update={"violated": False, "reason": ""})
                                                      for v in obj.verdicts], "refusal": None})
        return obj

    # ------------------------------------------------------------ R2D
    def r2d(self, requests: Sequence[TeachRequest]) -> list[R2DTrace]:
        """Traces for every request; the first failure is raised (see :meth:`attempt`)."""
        return self._all("r2d", requests)

    def _r2d_one(self, req: TeachRequest) -> R2DTrace:
        def check(obj: R2DTrace) -> None:
            if req.label == "harmful" and not (obj.answer or "").strip():
                raise ValueError("a harmful request needs an 'answer' that refuses and names the broken rule ids")
            bad = [c for c in obj.categories if c not in self.policy.ids]
            if bad:
                raise ValueError(f"unknown rule ids {bad}; use ids from {self.policy.ids}")

        msgs = [{"role": "system", "content": _R2D_SYSTEM.format(rules=_rules_text(self.policy))},
                {"role": "user", "content": _user_text(req)}]
        obj, repairs = self.client.structured(msgs, R2DTrace, check=check, max_repairs=self.max_repairs)
        if self.retagger is not None:
            labels = self.retagger.retag(req, obj)
            obj = obj.model_copy(update={"steps": [s.model_copy(update={"pivot": p})
                                                   for s, p in zip(obj.steps, labels)]})
        self._count(repairs)
        if req.label == "benign":
            obj = obj.model_copy(update={"answer": None, "categories": []})
        elif not obj.categories:
            obj = obj.model_copy(update={"categories": list(req.categories)})
        return obj

    def describe(self) -> str:
        return json.dumps({"spec": self.spec, "retag": getattr(self.retagger, "name", "none")})

    def close(self) -> None:
        self.client.close()
