"""Obfuscation attacks: the request (and optionally the answer) in an encoding or cipher."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import SpecError
from . import _codecs as C
from ._base import ATTACKS, Built, TextAttack
from ._data import fill, package_data, template

WEI = "https://arxiv.org/abs/2307.02483"
CIPHERCHAT = "https://arxiv.org/abs/2308.06463"

Answer = Literal["plain", "encoded"]


def _answer_rule(answer: str) -> str:
    if answer not in ("plain", "encoded"):
        raise SpecError(f"answer must be 'plain' or 'encoded', not {answer!r}")
    return package_data("templates.yaml")["answer_rules"][answer]


class _Encoding(TextAttack):
    """An attack that sends ``encode(request)``; :meth:`decode_response` undoes an encoded answer."""

    family = "encoding"
    request_form = "encoded"
    answer: str = "plain"

    def encode(self, text: str) -> str:
        raise NotImplementedError

    def decode(self, text: str) -> str:
        """Inverse of :meth:`encode` (used on answers given in the encoding)."""
        raise NotImplementedError

    def wrap(self, encoded: str) -> str:
        raise NotImplementedError

    def build(self, records, rngs, target):
        out = []
        for r in records:
            enc = self.encode(r.user_text())
            out.append(Built([{"role": "user", "content": self.wrap(enc)}], meta={"encoded_request": enc}))
        return out

    def rewrite(self, request: str, rng: random.Random) -> str:
        return self.wrap(self.encode(request))

    def decode_response(self, text: str) -> str:
        return self.decode(text) if self.answer == "encoded" else text


@ATTACKS.register()
@dataclass(kw_only=True)
class Base64(_Encoding):
    name = "base64"
    paper = WEI
    description = "Base64: the request encoded (input), the answer asked in base64 (output), or both."
    mode: Literal["input", "output", "both"] = "input"

    def __post_init__(self) -> None:
        if self.mode not in ("input", "output", "both"):
            raise SpecError(f"base64: mode must be input, output or both, not {self.mode!r}")
        if self.mode == "output":
            # The request itself is plain text in this mode.
            self.request_form = "verbatim"  # type: ignore[misc]

    @property
    def answer(self) -> str:  # type: ignore[override]
        return "plain" if self.mode == "input" else "encoded"

    def encode(self, text: str) -> str:
        return text if self.mode == "output" else C.b64_encode(text)

    def decode(self, text: str) -> str:
        return C.b64_decode(text)

    def wrap(self, encoded: str) -> str:
        return fill(template(f"base64_{self.mode}"), request=encoded)


@ATTACKS.register()
@dataclass(kw_only=True)
class Rot13(_Encoding):
    name = "rot13"
    paper = WEI
    description = "ROT13-encoded request; the answer in plain text or in ROT13."
    answer: Answer = "plain"

    def __post_init__(self) -> None:
        _answer_rule(self.answer)

    def encode(self, text: str) -> str:
        return C.shift_letters(text, 13)

    def decode(self, text: str) -> str:
        return C.shift_letters(text, 13)

    def wrap(self, encoded: str) -> str:
        return fill(template("rot13"), request=encoded, answer_rule=_answer_rule(self.answer))


@ATTACKS.register()
@dataclass(kw_only=True)
class Leetspeak(_Encoding):
    name = "leetspeak"
    paper = WEI
    description = "The request in leetspeak (letters replaced by look-alike digits)."

    def encode(self, text: str) -> str:
        return C.leet_encode(text)

    def decode(self, text: str) -> str:
        return C.leet_decode(text)

    def wrap(self, encoded: str) -> str:
        return fill(template("leetspeak"), request=encoded)


@ATTACKS.register()
@dataclass(kw_only=True)
class Disemvowel(_Encoding):
    name = "disemvowel"
    paper = WEI
    description = "The request with its vowels removed."

    def encode(self, text: str) -> str:
        return C.disemvowel(text)

    def decode(self, text: str) -> str:
        return text  # not invertible; answers are asked in plain English

    def wrap(self, encoded: str) -> str:
        return fill(template("disemvowel"), request=encoded)


@ATTACKS.register()
@dataclass(kw_only=True)
class Misspellings(TextAttack):
    name = "misspellings"
    family = "encoding"
    paper = "https://arxiv.org/abs/2404.01318"
    description = "Seeded typos (swapped, dropped or doubled letters) in the request's longer words."
    randomised = True
    request_form = "rewritten"
    rate: float = 0.5
    """Share of words of four letters or more that get one typo."""

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise SpecError("misspellings: rate must be in [0, 1]")

    def rewrite(self, request: str, rng: random.Random) -> str:
        return misspell(request, rng, self.rate)


def misspell(text: str, rng: random.Random, rate: float) -> str:
    def typo(m: re.Match) -> str:
        w = m.group(0)
        if len(w) < 4 or rng.random() >= rate:
            return w
        i = rng.randrange(1, len(w) - 1)  # keep the first letter: the word stays recognisable
        kind = rng.choice(("swap", "drop", "double"))
        if kind == "swap":
            return w[:i] + w[i + 1] + w[i] + w[i + 2:]
        if kind == "drop":
            return w[:i] + w[i + 1:]
        return w[:i] + w[i] + w[i:]

    return re.sub(r"[A-Za-z]+", typo, text)


class _Cipher(_Encoding):
    """CipherChat-style: the model is told it is an expert in the cipher and to answer in it."""

    paper = CIPHERCHAT
    cipher_name = ""
    cipher_rule = ""
    answer: Answer = "encoded"

    def __post_init__(self) -> None:
        _answer_rule(self.answer)

    def wrap(self, encoded: str) -> str:
        example = "meet me at the old bridge"
        answer_rule = ("write your whole answer in the cipher." if self.answer == "encoded"
                       else "write your answer in plain English.")
        return fill(template("cipher"), request=encoded, cipher_name=self.cipher_name,
                    cipher_rule=self.cipher_rule, answer_rule=answer_rule,
                    example_plain=example, example_encoded=self.encode(example))


@ATTACKS.register()
@dataclass(kw_only=True)
class Caesar(_Cipher):
    name = "caesar"
    description = "Caesar cipher (letters shifted); the answer requested in the cipher and decoded."
    cipher_name = "Caesar cipher"
    answer: Answer = "encoded"
    shift: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shift % 26 == 0:
            raise SpecError("caesar: a shift that is a multiple of 26 does not encode anything")

    @property
    def cipher_rule(self) -> str:  # type: ignore[override]
        return f"Every letter is replaced by the letter {self.shift} places later in the alphabet."

    def encode(self, text: str) -> str:
        return C.shift_letters(text, self.shift)

    def decode(self, text: str) -> str:
        return C.shift_letters(text, -self.shift)


@ATTACKS.register()
@dataclass(kw_only=True)
class Atbash(_Cipher):
    name = "atbash"
    description = "Atbash cipher (alphabet mirrored); the answer requested in the cipher and decoded."
    cipher_name = "Atbash cipher"
    cipher_rule = "Every letter is replaced by its mirror in the alphabet: a becomes z, b becomes y, and so on."
    answer: Answer = "encoded"

    def encode(self, text: str) -> str:
        return C.atbash(text)

    def decode(self, text: str) -> str:
        return C.atbash(text)


@ATTACKS.register()
@dataclass(kw_only=True)
class Morse(_Cipher):
    name = "morse"
    description = "Morse code; the answer requested in Morse and decoded."
    cipher_name = "Morse code"
    cipher_rule = "Letters are written as dots and dashes separated by spaces, and words are separated by ' / '."
    answer: Answer = "encoded"

    def encode(self, text: str) -> str:
        return C.morse_encode(text)

    def decode(self, text: str) -> str:
        return C.morse_decode(text)
