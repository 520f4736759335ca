"""Published prompt-only defences, as guards. Their texts live in prompts.yaml and can be replaced
through each guard's options (e.g. with the exact wording of a paper)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ..data._formats import DEFAULT_SCOT_FORMAT, SCoTFormat
from ..models import ChatModel, Completion, Conversation, GenerationConfig, ProgressFn
from ._base import GUARDS, GuardedOutput
from ._core import GuardBase, GuardKind, last_user, passthrough, run_stage, text, with_last_user, with_system
from ._parse import ScotMalformed, SCoTReader, read_r2d


class PromptGuard(GuardBase):
    """A guard that rewrites each conversation, generates once and reads the answer."""

    def rewrite(self, conv: Conversation) -> Conversation:
        raise NotImplementedError

    def read(self, c: Completion) -> GuardedOutput:
        return passthrough(c)

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        comps = model.generate([self.rewrite(c) for c in conversations], config, progress=progress)
        return [self.read(c) for c in comps]


@GUARDS.register()
@dataclass
class SelfReminder(PromptGuard):
    """Self-Reminder (Xie et al. 2023): a responsibility reminder around the user's message."""

    name: ClassVar[str] = "self-reminder"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://www.nature.com/articles/s42256-023-00765-8"

    system: str | None = None
    """System prompt; default from prompts.yaml."""
    suffix: str | None = None
    """Appended to the last user message; default from prompts.yaml ('' for none)."""

    def rewrite(self, conv: Conversation) -> Conversation:
        suffix = text("self_reminder", "suffix") if self.suffix is None else self.suffix
        conv = with_last_user(conv, f"{last_user(conv)}\n\n{suffix}" if suffix else last_user(conv))
        return with_system(conv, self.system or text("self_reminder", "system"))


def split_markers(answer: str, thoughts: str, final: str) -> tuple[str, str] | None:
    """(reasoning, response) around a final-answer marker, or None without one."""
    k = answer.rfind(final)
    if k < 0:
        return None
    return answer[:k].replace(thoughts, "").strip(), answer[k + len(final):].strip()


@GUARDS.register()
@dataclass
class GoalPriority(PromptGuard):
    """Goal Prioritization (Zhang et al. 2024): safety before helpfulness, analysis then answer."""

    name: ClassVar[str] = "goal-priority"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2311.09096"

    system: str | None = None
    """The instruction with examples; default from prompts.yaml."""

    def rewrite(self, conv: Conversation) -> Conversation:
        return with_system(conv, self.system or text("goal_priority", "system"))

    def read(self, c: Completion) -> GuardedOutput:
        parts = split_markers(c.text, text("goal_priority", "thoughts_marker"), text("goal_priority", "response_marker"))
        if parts is None:  # the model ignored the format: show the answer, minus a stray marker
            return passthrough(c, text=c.text.replace(text("goal_priority", "thoughts_marker"), "").strip())
        return passthrough(c, text=parts[1], reasoning=parts[0])


@dataclass(frozen=True)
class Demonstration:
    user: str
    assistant: str


@GUARDS.register()
@dataclass
class InContextDefense(PromptGuard):
    """In-Context Defense (Wei et al. 2023): earlier turns that show refusals of harmful requests."""

    name: ClassVar[str] = "icd"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2310.06387"

    shots: int = 1
    """How many demonstrations (from ``demonstrations`` or prompts.yaml) to prepend."""
    demonstrations: list[dict[str, str]] | None = None
    """``[{"user", "assistant"}, ...]``; default from prompts.yaml."""

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..errors import SpecError

        demos = self._demos()
        if not 1 <= self.shots <= len(demos):
            raise SpecError(f"guard 'icd': shots must be in 1..{len(demos)}, got {self.shots}")

    def _demos(self) -> list[Demonstration]:
        from ..errors import SpecError

        raw = self.demonstrations if self.demonstrations is not None else text("icd", "demonstrations")
        try:
            return [Demonstration(user=d["user"], assistant=d["assistant"]) for d in raw]
        except (KeyError, TypeError):
            raise SpecError("guard 'icd': demonstrations must be a list of {user, assistant} objects") from None

    def rewrite(self, conv: Conversation) -> Conversation:
        turns: Conversation = []
        for d in self._demos()[: self.shots]:
            turns += [{"role": "user", "content": d.user}, {"role": "assistant", "content": d.assistant}]
        k = 1 if conv and conv[0]["role"] == "system" else 0
        return [*[dict(m) for m in conv[:k]], *turns, *[dict(m) for m in conv[k:]]]


@GUARDS.register()
@dataclass
class R2DPrompt(PromptGuard):
    """R2D-p: the pivot instruction as a system prompt, no training; pivots are stripped."""

    name: ClassVar[str] = "r2d-prompt"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2502.12970"

    system: str | None = None
    """The pivot instruction; default from prompts.yaml."""
    refuse_on_unsafe: bool = False
    """Replace the answer with a refusal when any [UNSAFE] tag appears."""

    def rewrite(self, conv: Conversation) -> Conversation:
        return with_system(conv, self.system or text("r2d_prompt", "system"))

    def read(self, c: Completion) -> GuardedOutput:
        return read_r2d(c, refuse_on_unsafe=self.refuse_on_unsafe)


def policy_lines(categories: list[dict[str, str]] | None) -> str:
    """One ``- id: description`` line per policy rule (default: the SCoT taxonomy in prompts.yaml)."""
    cats = categories or text("scot_prompt", "categories")
    return "\n".join(f"- {c['id']}: {c.get('description', '')}".rstrip(": ") for c in cats)


@GUARDS.register()
@dataclass
class SCoTCheckPrompt(PromptGuard):
    """SCoT's prompt-only level P1: a system prompt that asks the model to check the request's
    safety before answering, with no policy and no output format; the answer is shown as is."""

    name: ClassVar[str] = "scot-p1"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2501.19180"
    prompt_key: ClassVar[str] = "p1"

    system: str | None = None
    """The instruction (``{categories}`` is filled in where present); default from prompts.yaml."""
    categories: list[dict[str, str]] | None = None
    """Policy rules ``[{"id", "description"}]`` for ``{categories}``; default: the SCoT taxonomy."""

    def system_prompt(self) -> str:
        template = self.system or text("scot_prompt", self.prompt_key)
        return template.replace("{categories}", policy_lines(self.categories))

    def rewrite(self, conv: Conversation) -> Conversation:
        return with_system(conv, self.system_prompt())


@GUARDS.register()
@dataclass
class SCoTPolicyPrompt(SCoTCheckPrompt):
    """SCoT's prompt-only level P2: P1 with the policy's harm categories listed; the answer is
    shown as is."""

    name: ClassVar[str] = "scot-p2"
    prompt_key: ClassVar[str] = "p2"


@GUARDS.register()
@dataclass
class SCoTPrompt(PromptGuard):
    """SCoT by prompting, the paper's prompt-only level P3: the full SCoT format as instructions.
    The answer is read like the ``scot`` guard's: only the text after the response header reaches
    the user, and a refusal names the violated rules.

    ``variant``: ``zero-shot`` (format + policy), ``few-shot`` (plus one worked refusal).
    Registered as ``scot-prompt`` and (the same guard under its level's name) ``scot-p3``.
    """

    name: ClassVar[str] = "scot-prompt"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2501.19180"

    variant: Literal["zero-shot", "few-shot"] = "zero-shot"
    """Instructions only, or instructions plus a worked example."""
    categories: list[dict[str, str]] | None = None
    """Policy rules ``[{"id", "description"}]``; default: the SCoT taxonomy in prompts.yaml."""
    malformed: ScotMalformed = "show"
    """What the user sees when the answer lacks the SCoT headers (see the ``scot`` guard)."""
    fmt: SCoTFormat = field(default_factory=lambda: DEFAULT_SCOT_FORMAT)

    def system_prompt(self) -> str:
        cats = self.categories or text("scot_prompt", "categories")
        prompt = text("scot_prompt", "zero_shot").format(categories=policy_lines(self.categories))
        if self.variant == "few-shot":
            yes = text("scot_prompt", "example_yes")
            reason = text("scot_prompt", "example_reason")
            example = "\n".join(
                self.fmt.yes_line.format(category=c["id"], reason=reason) if c["id"] == yes
                else self.fmt.no_line.format(category=c["id"]) for c in cats)
            prompt += "\n\n" + text("scot_prompt", "few_shot").format(example_lines=example)
        return prompt

    def rewrite(self, conv: Conversation) -> Conversation:
        return with_system(conv, self.system_prompt())

    def read(self, c: Completion) -> GuardedOutput:
        cats = self.categories or text("scot_prompt", "categories")
        return SCoTReader(self.fmt, self.malformed, known=tuple(cat["id"] for cat in cats)).read(c)


@GUARDS.register()
@dataclass
class SCoTFormatPrompt(SCoTPrompt):
    """SCoT's prompt-only level P3 (the ``scot-prompt`` guard under its level's name)."""

    name: ClassVar[str] = "scot-p3"


@GUARDS.register()
@dataclass
class IntentionAnalysis(GuardBase):
    """Intention Analysis (Zhang et al. 2024), two stages: analyse the intention, then answer
    with the analysis in the conversation. The analysis is returned as ``reasoning``."""

    name: ClassVar[str] = "intention-analysis"
    kind: ClassVar[GuardKind] = "prompt"
    paper: ClassVar[str] = "https://arxiv.org/abs/2401.06561"

    analyse: str | None = None
    """Stage-1 instruction with ``{prompt}``; default from prompts.yaml."""
    respond: str | None = None
    """Stage-2 instruction; default from prompts.yaml."""
    analysis_tokens: int = 128
    """Token budget of the analysis stage."""

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        from dataclasses import replace

        ask = self.analyse or text("intention_analysis", "analyse")
        stage1 = [with_last_user(c, ask.format(prompt=last_user(c))) for c in conversations]
        analyses = run_stage(model, stage1, replace(config, max_new_tokens=self.analysis_tokens))
        respond = self.respond or text("intention_analysis", "respond")
        stage2 = [[*s1, {"role": "assistant", "content": a.text}, {"role": "user", "content": respond}]
                  for s1, a in zip(stage1, analyses)]
        answers = run_stage(model, stage2, config, progress=progress)
        return [passthrough(c, reasoning=a.text, analysis_tokens=a.completion_tokens)
                for a, c in zip(analyses, answers)]


@GUARDS.register()
@dataclass
class Paraphrase(GuardBase):
    """Paraphrase defence (Jain et al. 2023): the model restates the request, then answers the
    restatement, which tends to break adversarial suffixes and templates."""

    name: ClassVar[str] = "paraphrase"
    kind: ClassVar[GuardKind] = "filter"
    paper: ClassVar[str] = "https://arxiv.org/abs/2309.00614"

    instruction: str | None = None
    """Paraphrase instruction with ``{prompt}``; default from prompts.yaml."""
    paraphrase_tokens: int = 128
    """Token budget of the paraphrase."""
    paraphraser: Any = None
    """A separate ChatModel to paraphrase with (default: the guarded model)."""

    def generate(self, model: ChatModel, conversations: Sequence[Conversation], config: GenerationConfig,
                 *, progress: ProgressFn | None = None) -> list[GuardedOutput]:
        from dataclasses import replace

        ask = self.instruction or text("paraphrase", "instruction")
        para_in = [[{"role": "user", "content": ask.format(prompt=last_user(c))}] for c in conversations]
        paras = run_stage(self.paraphraser or model, para_in, replace(config, max_new_tokens=self.paraphrase_tokens))
        # An empty paraphrase would drop the request entirely; keep the original then.
        rewritten = [with_last_user(c, p.text.strip() or last_user(c)) for c, p in zip(conversations, paras)]
        answers = run_stage(model, rewritten, config, progress=progress)
        return [passthrough(c, paraphrase=p.text.strip()) for p, c in zip(paras, answers)]
