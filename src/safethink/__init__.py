"""safethink: teach language models to reason about safety before they answer, and measure it.

The public API, each name imported on first use so that ``import safethink`` stays fast (no torch)::

    import safethink

    model = safethink.load_model("smollm2-135m")                     # safethink.models
    prompts = safethink.load_prompts("builtin:harmful")              # safethink.data
    safethink.build_dataset(config, "data/scot")                     # safethink.synth
    safethink.train(train_config, model="smollm2-135m", data="data/scot", out="runs/scot")
    guard = safethink.create_guard("r2d-pivot", on_unsafe="rollback")
    probe = safethink.fit_probe(model, ["builtin:harmful"], ["builtin:twins"])  # safethink.probes
    result = safethink.run_eval(spec)                                # safethink.eval
    safethink.render_report(result.out_dir)

Everything else lives in the subpackages (``safethink.models``, ``safethink.eval``, ...), each with a
curated ``__all__``. ``safethink.train`` names the training function, also after the training subpackage
is imported: reach the subpackage with ``from safethink.train import ...`` (``import safethink.train as t``
binds the function, not the subpackage).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "load_model": "safethink.models",
    "load_prompts": "safethink.data",
    "build_dataset": "safethink.synth",
    "train": "safethink.train",
    "create_guard": "safethink.guard",
    "fit_probe": "safethink.probes",
    "run_eval": "safethink.eval",
    "render_report": "safethink.eval",
}
"""Public name -> the module it is imported from on first use."""

__all__ = ["__version__", *sorted(_HOMES)]

if TYPE_CHECKING:
    from .data import load_prompts
    from .eval import render_report, run_eval
    from .guard import create_guard
    from .probes import fit_probe
    from .models import load_model
    from .synth import build_dataset
    from .train import train


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    if name != "train":  # ``train`` is served by _Package.train, never cached under the subpackage's name
        globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public API and the public subpackages (not this module's helpers)."""
    import pkgutil

    subpackages = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return sorted({*__all__, *subpackages})


class _Package(types.ModuleType):
    """The ``safethink`` module: importing the ``safethink.train`` subpackage would set it as the attribute
    ``train`` and hide the training function; this keeps ``safethink.train`` the function (the subpackage
    stays importable through ``sys.modules``, as every ``from safethink.train import ...`` does)."""

    @property
    def train(self) -> Any:
        return importlib.import_module("safethink.train").train

    @train.setter
    def train(self, value: Any) -> None:  # the import system recording the subpackage: nothing to keep
        if not isinstance(value, types.ModuleType):
            raise AttributeError("safethink.train is the training function and cannot be replaced")


sys.modules[__name__].__class__ = _Package
