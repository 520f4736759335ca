"""Text encodings used by the obfuscation attacks, each with its inverse where one exists."""

from __future__ import annotations

import base64
import binascii
import re
import string

MORSE = {
    "a": ".-", "b": "-...", "c": "-.-.", "d": "-..", "e": ".", "f": "..-.", "g": "--.", "h": "....",
    "i": "..", "j": ".---", "k": "-.-", "l": ".-..", "m": "--", "n": "-.", "o": "---", "p": ".--.",
    "q": "--.-", "r": ".-.", "s": "...", "t": "-", "u": "..-", "v": "...-", "w": ".--", "x": "-..-",
    "y": "-.--", "z": "--..", "0": "-----", "1": ".----", "2": "..---", "3": "...--", "4": "....-",
    "5": ".....", "6": "-....", "7": "--...", "8": "---..", "9": "----.", ".": ".-.-.-", ",": "--..--",
    "?": "..--..", "'": ".----.", "!": "-.-.--", "/": "-..-.", "(": "-.--.", ")": "-.--.-", "&": ".-...",
    ":": "---...", ";": "-.-.-.", "=": "-...-", "+": ".-.-.", "-": "-....-", "_": "..--.-", '"': ".-..-.",
    "$": "...-..-", "@": ".--.-.",
}
MORSE_BACK = {v: k for k, v in MORSE.items()}

LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "g": "9", "b": "8"}
LEET_BACK = {v: k for k, v in LEET.items()}


def b64_encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


_B64_RUN = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


def b64_decode(text: str) -> str:
    """Decode the base64 runs in a model's answer; text that is not base64 is left alone.

    Models often wrap the encoded answer in prose or split it over lines, so every run of base64
    characters is decoded on its own and kept only if it yields printable UTF-8.
    """
    joined = re.sub(r"\s+", "", text)
    whole = _try_b64(joined)
    if whole is not None:
        return whole

    def sub(m: re.Match) -> str:
        out = _try_b64(m.group(0))
        return m.group(0) if out is None else out

    return _B64_RUN.sub(sub, text)


def _try_b64(s: str) -> str | None:
    if len(s) < 4:
        return None
    s = s + "=" * (-len(s) % 4)
    try:
        raw = base64.b64decode(s, validate=True)
        out = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not out or any(not (c.isprintable() or c.isspace()) for c in out):
        return None
    return out


def shift_letters(text: str, k: int) -> str:
    """Caesar shift of ASCII letters by ``k`` (ROT13 is ``k=13``); other characters unchanged."""
    k %= 26
    lo, up = string.ascii_lowercase, string.ascii_uppercase
    table = str.maketrans(lo + up, lo[k:] + lo[:k] + up[k:] + up[:k])
    return text.translate(table)


_ATBASH = str.maketrans(string.ascii_lowercase + string.ascii_uppercase,
                        string.ascii_lowercase[::-1] + string.ascii_uppercase[::-1])


def atbash(text: str) -> str:
    """Mirror the alphabet (a<->z); its own inverse."""
    return text.translate(_ATBASH)


def morse_encode(text: str) -> str:
    """Letters separated by spaces, words by ' / '; characters without a code are dropped."""
    words = text.lower().split()
    return " / ".join(" ".join(MORSE[c] for c in w if c in MORSE) for w in words)


def morse_decode(text: str) -> str:
    """Inverse of :func:`morse_encode` (lower case). Unknown groups are kept as they are."""
    out = []
    for word in re.split(r"\s*/\s*|\s{3,}", text.strip()):
        out.append("".join(MORSE_BACK.get(g, g) for g in word.split()))
    return " ".join(out)


def leet_encode(text: str) -> str:
    return "".join(LEET.get(c.lower(), c) for c in text)


def leet_decode(text: str) -> str:
    """Best-effort inverse (lower case for the substituted letters; real digits come back as letters)."""
    return "".join(LEET_BACK.get(c, c) for c in text)


def disemvowel(text: str) -> str:
    """Drop vowels inside words, keeping a word's first letter so short words stay readable."""
    return " ".join(w[:1] + re.sub(r"[aeiouAEIOU]", "", w[1:]) for w in text.split(" "))
