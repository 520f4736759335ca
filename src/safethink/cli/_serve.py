"""``safethink serve``: a guarded model behind an OpenAI-compatible server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError, SpecError
from ._common import ARG_HELP, DTYPE_HELP, deprecated, either, err_console, parse_pairs, quiet_hf

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


AUTO_GUARDS = {"r2d": "r2d-pivot", "scot": "scot"}
"""Training method recorded in a run -> the guard that fits it."""


def auto_guard(adapter: Path | None) -> str:
    """The guard that fits a safethink training run: r2d -> r2d-pivot, scot -> scot; no adapter -> none.

    An adapter whose run records no method the guard can follow is an error naming ``--guard``: the
    server never falls back to no guard for a model that was adapted.
    """
    if adapter is None:
        return "none"
    run = adapter / "safethink_run.json"
    method = None
    if run.is_file():
        try:
            method = json.loads(run.read_text(encoding="utf-8")).get("method")
        except (json.JSONDecodeError, AttributeError) as e:
            raise InputError(f"not a JSON object: {e}", path=str(run)) from None
    if method in AUTO_GUARDS:
        return AUTO_GUARDS[method]
    found = f"records method {method!r}" if method else ("records no method" if run.is_file() else "has no safethink_run.json")
    raise SpecError(f"--guard auto: the adapter {adapter} {found}, so no guard can be picked for it; "
                    f"name one with --guard (for example --guard r2d-pivot, --guard scot, or --guard none "
                    f"to serve it unguarded)")


def serve(
    model: Annotated[str, typer.Option(help="Model spec: smollm2-135m, hf:<id|path>, openai:<model>@<url>, vllm:<id>, llamacpp:<file>")] = "smollm2-135m",
    adapter: Annotated[Optional[Path], typer.Option(help="PEFT adapter directory (or a safethink run dir).")] = None,
    guard: Annotated[str, typer.Option(help="Guard name (see `safethink guards list`); auto picks from the run's "
                                            "method (an adapter without one needs --guard).")] = "auto",
    arg: Annotated[Optional[list[str]], typer.Option("--arg", help=f"{ARG_HELP}: a guard option, read as a YAML "
                                                     "scalar, e.g. --arg on_unsafe=rollback.")] = None,
    reasoning: Annotated[str, typer.Option(help="Reasoning clients get: none, safe (the steps before the first "
                                                "flagged step) or full (everything, flagged steps included: "
                                                "for debugging only).")] = "none",
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    api_key: Annotated[Optional[str], typer.Option(help="Require 'Authorization: Bearer KEY' (default: env SAFETHINK_API_KEY).")] = None,
    model_name: Annotated[Optional[str], typer.Option(help="Model id clients send (default: the spec).")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, help="Requests queued or generating before 429 (a timed-out "
                                                             "request counts until its generation has stopped).")] = 64,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoded together.")] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds before a request gets 504; its generation is "
                                                         "stopped at the next decoding step.")] = 300.0,
    max_request_bytes: Annotated[int, typer.Option(min=1024)] = 1_000_000,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: auto)")] = None,
    dtype: Annotated[Optional[str], typer.Option(help=f"{DTYPE_HELP} (default: bf16 on GPU, fp32 on CPU)")] = None,
    guard_arg: Annotated[Optional[list[str]], deprecated("--guard-arg", "--arg")] = None,
) -> None:
    """Serve a guarded model over the OpenAI chat-completions API."""
    from ..guard import GUARDS
    from ..models import load_model, parse_model_spec
    from ..serve import API_KEY_ENV, create_app

    parse_model_spec(model)  # fail fast on a bad spec, before loading anything
    if reasoning not in ("none", "safe", "full"):
        raise SpecError(f"--reasoning {reasoning!r}: expected none, safe or full")
    name = auto_guard(adapter) if guard == "auto" else guard
    guard_obj = GUARDS.create(name, **parse_pairs(either(arg, guard_arg, "--arg")))
    key = api_key or os.environ.get(API_KEY_ENV) or None
    if host not in LOOPBACK and key is None:
        err_console.print(f"[yellow]warning:[/] serving on {host} without an API key; anyone who can reach "
                          f"this port can use the model (set --api-key or {API_KEY_ENV})")
    try:
        import uvicorn
    except ImportError:
        from ..errors import MissingExtraError

        raise MissingExtraError("uvicorn", "serve", "safethink serve") from None
    quiet_hf()
    m = load_model(model, adapter=str(adapter) if adapter else None, device=device, dtype=dtype)
    app = create_app(m, guard_obj, api_key=key, model_name=model_name, max_request_bytes=max_request_bytes,
                     max_concurrency=max_concurrency, timeout_s=timeout, max_batch=max_batch,
                     reasoning=reasoning)  # type: ignore[arg-type]
    served = model_name or m.spec
    if reasoning == "full":
        err_console.print("[yellow]warning:[/] --reasoning full sends the whole reasoning, steps the guard "
                          "flagged included; use it for debugging only")
    err_console.print(f"serving [bold]{served}[/] with guard [bold]{name}[/] on http://{host}:{port}/v1"
                      f" ({'API key required' if key else 'no API key'}, reasoning: {reasoning})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
