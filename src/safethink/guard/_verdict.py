"""``scot-verdict``: decide a SCoT model's rule verdicts from their log-odds, then let it answer.

A SCoT-trained model writes one verdict line per policy rule (``* illicit/violent: Yes. Reason: ...``
or ``...: No.``) before its response. Greedy decoding picks ``Yes`` only when it is the single most
likely token, and on a small model trained with one ``Yes`` among many ``No`` lines that bar is set
by the class balance of the training set, not by the request. This guard reads the decision
instead of sampling it:

1. the model writes its restatement of the request (the line after the verify header);
2. one forward pass over the reasoning with every rule line teacher-forced to ``No`` gives, at each
   rule's verdict position, ``log p(Yes) - log p(No)`` (each rule's score given that the rules above
   it were not violated, which is what the model sees whenever no earlier rule fired);
3. the rules whose score is above ``threshold`` are violated; the guard writes the verdict lines and
   the conclusion accordingly, and the model writes the response after the response header.

A refusal names the violated rules. ``threshold`` sets the trade-off between missed harmful requests
and refused benign ones (0 = ``Yes`` as likely as ``No``); ``info["verdict_scores"]`` records every
score so a threshold can be chosen from stored evaluation runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..data._formats import DEFAULT_SCOT_FORMAT, SCoTFormat
from ..errors import SpecError
from ..models import ChatModel, Conversation, GenerationConfig, ProgressFn
from ..models._whitebox import white_box
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, positive, run_stage


@GUARDS.register()
@dataclass
class SCoTVerdictGuard(GuardBase):
    """SCoT with decoded rule verdicts: a rule is violated when its ``Yes``/``No`` log-odds exceed ``threshold``."""

    name: ClassVar[str] = "scot-verdict"
    kind: ClassVar[GuardKind] = "decode"

    decide: Literal["rules", "conclusion"] = "rules"
    """``rules``: a rule is violated when its own score is above ``threshold``. ``conclusion``: the request
    is rejected when the conclusion's score (reject vs safe, after rule lines all answered No) is above
    ``threshold``, and the model names the violated rules in the conclusion it then writes."""
    threshold: float = 0.0
    """Log-odds above which a rule (or the rejection) is decided: 0 = as likely as the alternative."""
    policy: str | None = None
    """Policy YAML whose enabled rules are the verdict lines (None: the SCoT taxonomy the data builder uses)."""
    restate_tokens: int = 32
    """Token budget of the restatement line."""
    fmt: SCoTFormat = field(default_factory=lambda: DEFAULT_SCOT_FORMAT)
    """The SCoT strings (headers, rule lines, conclusions, refusal template)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self.name, restate_tokens=self.restate_tokens)
        self._rules: list[tuple[str, str]] | None = None

    def rules(self) -> list[tuple[str, str]]:
        """(id, rule sentence) of every enabled rule, in reasoning order."""
        if self._rules is None:
            from ..data import load_policy

            self._rules = [(r.id, r.rule) for r in load_policy(self.policy).active]
        return self._rules

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        convs = list(conversations)
        if not convs:
            return []
        head = self.fmt.verify_header + "\n"
        restated, scores = self.score(model, convs, batch_size=config.batch_size)
        rule_ids = [rid for rid, _ in self.rules()]
        prefixes, rejecting, decided = [], [], []
        for r, sc in zip(restated, scores):
            if self.decide == "rules":
                violated = [rid for rid, s in zip(rule_ids, sc.rules) if s > self.threshold]
                reject = bool(violated)
                prefixes.append(head + self.reasoning(r, violated) + "\n" + self.fmt.response_header + "\n")
            else:
                violated, reject = [], sc.conclusion > self.threshold
                if reject:  # the model continues the rejecting conclusion, naming the rules itself
                    prefixes.append(head + self.reasoning(r, None))
                else:
                    prefixes.append(head + self.reasoning(r, []) + "\n" + self.fmt.response_header + "\n")
            decided.append(violated)
            rejecting.append(reject)
        comps = run_stage(model, convs, config, prefixes=prefixes, progress=progress)
        outs = []
        for c, prefix, violated, reject, sc in zip(comps, prefixes, decided, rejecting, scores):
            raw = prefix + (c.raw_text if c.raw_text is not None else c.text)
            full = prefix + c.text
            cut = full.find(self.fmt.response_header)
            reasoning = full[:cut] if cut >= 0 else full
            answer = full[cut + len(self.fmt.response_header):].strip() if cut >= 0 else ""
            if reject and not violated:  # the rules the model named in the conclusion it wrote
                violated = [rid for rid in rule_ids if rid in c.text.split("\n")[0]]
            info: dict[str, Any] = {
                "verdict_scores": {rid: round(s, 4) for rid, s in zip(rule_ids, sc.rules)},
                "conclusion_score": round(sc.conclusion, 4), "decide": self.decide,
                "threshold": self.threshold, "violated": violated,
                "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            }
            action = None
            if reject:
                action = "refused"
                named = violated or ["the safety policy"]
                if not answer or not any(v in answer for v in named):  # a refusal names the rules it applies
                    answer = self.fmt.refusal.format(categories=", ".join(named))
            outs.append(GuardedOutput(text=answer, raw=raw, reasoning=reasoning.strip(), action=action,
                                      finish_reason=c.finish_reason, info=info))
        return outs

    def score(self, model: ChatModel, conversations: Sequence[Conversation], *, batch_size: int = 16
              ) -> tuple[list[str], list[VerdictScores]]:
        """The model's restatement line of each request, and the scores read after it."""
        head = self.fmt.verify_header + "\n"
        first = run_stage(model, conversations, GenerationConfig(
            max_new_tokens=self.restate_tokens, stop=("\n",), batch_size=batch_size), prefixes=[head] * len(conversations))
        restated = [restatement(c.text) for c in first]
        scores = verdict_scores(model, conversations, [head + r for r in restated], [rid for rid, _ in self.rules()],
                                self.fmt, batch_size=batch_size)
        return restated, scores

    def reasoning(self, restated: str, violated: list[str] | None) -> str:
        """The analysis text for a decision: restatement, one line per rule, the conclusion. With
        ``violated=None`` (a rejection whose rules the model names) it ends at the conclusion's
        rejecting word, for the model to continue."""
        lines = [restated] if restated else []
        for rid, rule in self.rules():
            if violated and rid in violated:
                lines.append(self.fmt.yes_line.format(category=rid, reason=rule))
            else:
                lines.append(self.fmt.no_line.format(category=rid))
        if violated is None:
            opening, word, _ = _conclusion_split(self.fmt)
            lines.append(opening + word)
        elif violated:
            lines.append(self.fmt.reject_conclusion.format(categories=", ".join(violated)))
        else:
            lines.append(self.fmt.safe_conclusion)
        return "\n".join(lines)


def restatement(line: str) -> str:
    """The model's restatement line; empty when it skipped straight to the rule lines."""
    line = line.strip().split("\n")[0].strip()
    return "" if line.startswith(("*", "-", "#")) else line


def _fork(a: str, b: str) -> int:
    """Where two strings part: the end of their common prefix, moved back to just after a space, so
    the strings differ from a whole word on."""
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    while k and a[k - 1] != " ":
        k -= 1
    return k


def _verdict_split(fmt: SCoTFormat) -> tuple[str, str, str]:
    """(text before the verdict word, the No word, the Yes word) of the format's rule lines."""
    no_head, _, no_tail = fmt.no_line.partition("{category}")
    yes_head, _, yes_tail = fmt.yes_line.partition("{category}")
    if no_head != yes_head:
        raise SpecError("scot-verdict: the yes and no lines must start the same way")
    k = _fork(no_tail, yes_tail)  # ": " comes before the verdict word
    return no_tail[:k], no_tail[k:].split(".")[0], yes_tail[k:].split(".")[0]


def _conclusion_split(fmt: SCoTFormat) -> tuple[str, str, str]:
    """(shared opening of the two conclusions, first word of the rejection, first word of the safe one)."""
    rej, safe = fmt.reject_conclusion.split("{")[0], fmt.safe_conclusion
    k = _fork(rej, safe)
    if not k or not rej[k:].split() or not safe[k:].split():
        raise SpecError("scot-verdict: the two conclusions must share an opening and then differ in a word")
    return rej[:k], rej[k:].split()[0], safe[k:].split()[0]


def _first_ids(tok: Any, a: str, b: str, what: str) -> tuple[int, int]:
    ia, ib = tok.encode(a, add_special_tokens=False), tok.encode(b, add_special_tokens=False)
    if not ia or not ib or ia[0] == ib[0]:
        raise SpecError(f"scot-verdict: {a.strip()!r} and {b.strip()!r} ({what}) must start with different tokens")
    return ia[0], ib[0]


@dataclass
class VerdictScores:
    """Log-odds read from a SCoT model with every rule line teacher-forced to ``No``."""

    rules: list[float]
    """Per rule, in policy order: ``log p(Yes) - log p(No)`` at its verdict position."""
    conclusion: float
    """``log p(reject word) - log p(safe word)`` where the conclusion's two forms part ("violates" vs "is")."""


def verdict_scores(model: ChatModel, conversations: Sequence[Conversation], heads: Sequence[str],
                   rule_ids: Sequence[str], fmt: SCoTFormat = DEFAULT_SCOT_FORMAT,
                   *, batch_size: int = 16) -> list[VerdictScores]:
    """Per conversation: the log-odds of ``Yes`` at every rule's verdict position and of a rejection at
    the conclusion, with the assistant turn teacher-forced to ``head`` followed by every rule line
    answered ``No``."""
    import torch

    wb = white_box(model, "guard 'scot-verdict' (it scores verdicts with the model's own weights)")
    tok = wb.tokenizer
    sep, no_word, yes_word = _verdict_split(fmt)
    space = " " if sep.endswith(" ") else ""
    yes_id, no_id = _first_ids(tok, space + yes_word, space + no_word, "rule verdicts")
    opening, rej_word, safe_word = _conclusion_split(fmt)
    rej_id, safe_id = _first_ids(tok, " " + rej_word, " " + safe_word, "conclusions")
    sep = sep.rstrip(" ")  # the space belongs to the verdict token
    line_head = fmt.no_line.partition("{category}")[0]
    texts, marks = [], []
    for conv, head in zip(conversations, heads):
        text = wb.render(conv, head.rstrip("\n") + "\n")
        m = []
        for rid in rule_ids:
            before = line_head + rid + sep
            text += before
            m.append(len(text))
            text += fmt.no_line.format(category=rid)[len(before):] + "\n"
        text += opening.rstrip(" ")
        m.append(len(text))
        texts.append(text)
        marks.append(m)
    out: list[VerdictScores] = []
    for start in range(0, len(texts), batch_size):
        batch = wb.encode(texts[start:start + batch_size], offsets=True)
        assert batch.offsets is not None
        logits = wb.logits(batch)
        for b, m in enumerate(marks[start:start + batch_size]):
            ends = [e for s, e in batch.offsets[b]]
            row = []
            for k, mk in enumerate(m):
                # the last token that ends at or before the mark predicts the verdict word
                pos = max(i for i, e in enumerate(ends) if 0 < e <= mk)
                lp = torch.log_softmax(logits[b, pos].float(), -1)
                a, z = (rej_id, safe_id) if k == len(m) - 1 else (yes_id, no_id)
                row.append(float(lp[a] - lp[z]))
            out.append(VerdictScores(rules=row[:-1], conclusion=row[-1]))
    return out
