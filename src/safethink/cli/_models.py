"""``safethink models list`` and ``safethink generate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import InputError, SafethinkError
from ._common import DTYPE_HELP, console, deprecated, either, progress_bar, quiet_hf

models_app = typer.Typer(help="Model specs and the bundled default model.", no_args_is_help=True)


@models_app.command("list")
def list_models() -> None:
    """Show the model spec forms and whether the bundled default model is available."""
    from ..models._bundled import bundled_gguf_path, bundled_model_dir

    table = Table(title="model specs")
    table.add_column("spec")
    table.add_column("backend")
    table.add_column("status")
    try:
        gguf = bundled_gguf_path()
        try:
            status = f"converted: {bundled_model_dir(convert=False)}"
        except SafethinkError:
            status = f"installed ({gguf.name}); converted on first use"
    except SafethinkError as e:
        status = f"[red]{e}[/]"
    table.add_row("smollm2-135m", "transformers (bundled SmolLM2-135M-Instruct)", status)
    table.add_row("hf:<hub id or path>", "transformers", "local path or local HF cache")
    table.add_row("openai:<model>@<url>", "OpenAI-compatible HTTP", "needs a running server")
    table.add_row("vllm:<hub id or path>", "vLLM in-process", _extra_status("vllm", "vllm"))
    table.add_row("llamacpp:<file.gguf>", "llama.cpp", _extra_status("llama_cpp", "llamacpp"))
    console.print(table)


def _extra_status(module: str, extra: str) -> str:
    import importlib.util

    if importlib.util.find_spec(module):
        return "installed"
    return f"pip install 'safethink[{extra}]'"


def read_prompts_file(path: Path) -> list[dict]:
    """Read ``{"id", "prompt"}`` or ``{"id", "messages"}`` lines; errors name the file and line."""
    from ..io import iter_jsonl
    from ..models import validate_messages

    rows = []
    for n, obj in iter_jsonl(path):
        if "messages" in obj:
            try:
                obj["messages"] = validate_messages(obj["messages"])
            except InputError as e:
                raise InputError(str(e), path=str(path), line=n) from None
        elif isinstance(obj.get("prompt"), str) and obj["prompt"].strip():
            obj["messages"] = [{"role": "user", "content": obj["prompt"]}]
        else:
            raise InputError("expected a non-empty string 'prompt' or a 'messages' list", path=str(path), line=n)
        obj.setdefault("id", str(n))
        rows.append(obj)
    if not rows:
        raise InputError("no prompts in file", path=str(path))
    return rows


def generate(
    model: Annotated[str, typer.Option(help="Model spec: smollm2-135m, hf:<id|path>, openai:<model>@<url>, vllm:<id>, llamacpp:<file>")] = "smollm2-135m",
    prompt: Annotated[Optional[str], typer.Option(help="One prompt; the answer is printed.")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="JSONL file of {id, prompt} or {id, messages} lines.")] = None,
    adapter: Annotated[Optional[Path], typer.Option(help="PEFT adapter directory (or a safethink run dir).")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    seed: Annotated[Optional[int], typer.Option()] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where the answers go (JSONL, one line per prompt); default stdout.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda, cuda:1 ... (default: auto)")] = None,
    dtype: Annotated[Optional[str], typer.Option(help=f"{DTYPE_HELP} (default: bf16 on GPU, fp32 on CPU)")] = None,
    output: Annotated[Optional[Path], deprecated("--output", "--out")] = None,
) -> None:
    """Answer one prompt (--prompt) or a JSONL file of prompts (--prompts)."""
    from ..models import GenerationConfig, load_model, parse_model_spec

    output = either(out, output, "--out")
    if (prompt is None) == (prompts is None):
        raise typer.BadParameter("give exactly one of --prompt or --prompts")
    parse_model_spec(model)  # fail fast on a bad spec, before loading anything
    rows = read_prompts_file(prompts) if prompts else [{"id": "0", "messages": [{"role": "user", "content": prompt}]}]
    quiet_hf()
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, batch_size=batch_size)
    m = load_model(model, adapter=str(adapter) if adapter else None, device=device, dtype=dtype)
    convs = [r["messages"] for r in rows]
    if prompt is not None and output is None:
        console.print(m.generate(convs, cfg)[0].text, highlight=False, markup=False)
        return
    with progress_bar("generating", len(convs)) as advance:
        outs = m.generate(convs, cfg, progress=advance)
    lines = [json.dumps({**r, "response": o.text, "finish_reason": o.finish_reason}, ensure_ascii=False) for r, o in zip(rows, outs)]
    if output:
        from ..io import atomic_write_text

        atomic_write_text(output, "\n".join(lines) + "\n")
        console.print(f"wrote {len(lines)} answers to {output}")
    else:
        for line in lines:
            typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("generate")(generate)
