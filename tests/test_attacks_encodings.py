"""Encodings and ciphers: round trips, tolerant decoding of model answers, seeded typos."""

from __future__ import annotations

import base64
import random
import string

import pytest

from safethink.attacks import ATTACKS
from safethink.attacks import _codecs as C
from safethink.attacks._encodings import misspell
from safethink.data._schema import PromptRecord


def _random_texts(n: int, alphabet: str, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(n)]


@pytest.mark.parametrize("text", _random_texts(50, string.printable + "éü漢字🙂"))
def test_base64_round_trip(text):
    assert C.b64_decode(C.b64_encode(text)) == text


def test_base64_decoding_tolerates_prose_and_line_breaks():
    enc = C.b64_encode("Here are the steps you asked for, in order.")
    assert C.b64_decode(enc[:20] + "\n" + enc[20:]) == "Here are the steps you asked for, in order."
    mixed = f"Sure! {enc} Hope that helps."
    assert "Here are the steps you asked for" in C.b64_decode(mixed)
    assert C.b64_decode("I will not do that.") == "I will not do that."
    # base64 of binary garbage is not 'decoded' into unprintable text
    junk = base64.b64encode(bytes(range(200, 230))).decode()
    assert C.b64_decode(junk) == junk


@pytest.mark.parametrize("k", [1, 3, 13, 25, -4])
def test_caesar_shift_round_trip(k):
    for t in _random_texts(20, string.ascii_letters + " .,!?0123"):
        enc = C.shift_letters(t, k)
        assert C.shift_letters(enc, -k) == t
    assert C.shift_letters("abc XYZ", 3) == "def ABC"


def test_rot13_and_atbash_are_involutions():
    for t in _random_texts(30, string.ascii_letters + " -"):
        assert C.shift_letters(C.shift_letters(t, 13), 13) == t
        assert C.atbash(C.atbash(t)) == t
    assert C.atbash("Hello") == "Svool"


def test_morse_round_trip_lower_case():
    for t in _random_texts(30, string.ascii_lowercase + "0123456789.,?"):
        t = " ".join(w for w in t.split() if w) or "a"
        assert C.morse_decode(C.morse_encode(t)) == t
    assert C.morse_encode("SOS help") == "... --- ... / .... . .-.. .--."


def test_leetspeak_round_trip_on_letters():
    t = "the best tools are simple"
    assert C.leet_encode(t) != t
    assert C.leet_decode(C.leet_encode(t)) == t


def test_disemvowel_keeps_consonants_and_first_letters():
    assert C.disemvowel("Explain how audits operate") == "Expln hw adts oprt"


@pytest.mark.parametrize("name,params", [("caesar", {"shift": 5}), ("atbash", {}), ("morse", {}),
                                         ("rot13", {"answer": "encoded"}), ("base64", {"mode": "both"}),
                                         ("base64", {"mode": "output"})])
def test_attacks_decode_encoded_answers(name, params):
    attack = ATTACKS.create(name, **params)
    answer = "first, gather the materials. second, follow the plan."
    encoded = C.b64_encode(answer) if name == "base64" else attack.encode(answer)
    assert encoded != answer
    assert attack.decode_response(encoded).lower() == answer


def test_plain_answer_modes_leave_answers_alone():
    for name, params in [("base64", {"mode": "input"}), ("rot13", {}), ("caesar", {"answer": "plain"})]:
        attack = ATTACKS.create(name, **params)
        assert attack.decode_response("Nope, not doing that.") == "Nope, not doing that."


def test_base64_output_mode_sends_the_request_in_plain_text():
    rec = PromptRecord(id="x", prompt="List three uses of vinegar", label="benign", source="t")
    sent = ATTACKS.create("base64", mode="output").prepare([rec], seed=0)[0].messages[0]["content"]
    assert "List three uses of vinegar" in sent and "base64" in sent


def test_misspellings_are_seeded_and_keep_first_letters():
    text = "Describe the procedure for recalibrating industrial thermometers"
    a = misspell(text, random.Random(1), 1.0)
    b = misspell(text, random.Random(1), 1.0)
    assert a == b and a != text
    assert [w[0] for w in a.split()] == [w[0] for w in text.split()]
    assert misspell(text, random.Random(1), 0.0) == text
