"""``safethink judge``: add verdicts (outcome, refused, score, judge) to a JSONL file of answers.

Answers go through the same no-answer rule as the eval runner (:func:`safethink.judges.judge_answers`):
an empty answer, or one that only repeats the prompt (``sent_prompt`` when the line has one, and
``prompt``), gets outcome ``no_answer``.

Verdicts are appended to ``OUT.partial`` (``OUT`` is ``--out``) chunk by chunk, so a killed run (an LLM judge over a big
file) resumes where it stopped: every complete line of the checkpoint is kept, and only a line a
kill tore (one that does not parse) is dropped and its input line judged again. The output file
itself is written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..errors import InputError
from ._common import ARG_HELP, console, deprecated, either, err_console, parse_pairs, progress_bar, quiet_hf


OPTIONAL_TEXT = ("sent_prompt", "prefix")
"""Optional input fields: the prompt actually sent (when an attack rewrote the request) and the answer
prefix the attack prefilled (part of ``response``)."""


def read_judge_input(path: Path) -> list[tuple[int, dict]]:
    """Lines with string ``prompt`` and ``response`` (and, optionally, string ``sent_prompt`` / ``prefix``);
    errors name the file and line."""
    from ..io import iter_jsonl

    rows = []
    for n, obj in iter_jsonl(path):
        for key in ("prompt", "response", *OPTIONAL_TEXT):
            if key in OPTIONAL_TEXT and obj.get(key) is None:
                continue
            if not isinstance(obj.get(key), str):
                got = "missing" if key not in obj else f"a {type(obj[key]).__name__}"
                raise InputError(f"expected a string {key!r} ({got})", path=str(path), line=n)
        rows.append((n, obj))
    if not rows:
        raise InputError("no lines to judge", path=str(path))
    return rows


def _partial_header(input_path: Path, spec: str) -> dict:
    digest = hashlib.sha256(input_path.read_bytes()).hexdigest()
    return {"partial_of": str(input_path), "input_sha256": digest, "judge": spec}


def _load_partial(partial: Path, header: dict, lines: set[int]) -> dict[int, dict]:
    """Finished rows from an earlier run of the same judge on the same input (else nothing): every
    complete checkpoint line, wherever a torn one sits among them."""
    from ..io import read_log

    entries = read_log(partial)
    if not entries or entries[0] != header:
        return {}
    done: dict[int, dict] = {}
    for rec in entries[1:]:
        if (isinstance(rec, dict) and isinstance(rec.get("line"), int) and rec["line"] in lines
                and isinstance(rec.get("row"), dict)):
            done[rec["line"]] = rec["row"]
    return done


def judge_cmd(
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: each line has 'prompt' and 'response' "
                                                              "(optional: 'sent_prompt', 'prefix').")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="JSONL written (required): input lines plus "
                                                                  "outcome, refused, score, judge, explanation.")] = None,
    judge: Annotated[str, typer.Option(help="Judge name (see `safethink judges list`): default, keyword-gcg, "
                                            "keyword-jbb, keyword-xstest, refusal-classifier, harmbench, llama-guard, "
                                            "strongreject; a full spec name?k=v also works.")] = "default",
    arg: Annotated[Optional[list[str]], typer.Option("--arg", help=f"{ARG_HELP}: a judge argument, e.g. "
                                                     "--arg model=openai:gpt-4o-mini@https://api.openai.com/v1")] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Lines judged (and checkpointed) together.")] = 64,
    output: Annotated[Optional[Path], deprecated("--output", "--out")] = None,
    judge_arg: Annotated[Optional[list[str]], deprecated("--judge-arg", "--arg")] = None,
) -> None:
    """Judge answers: complied, partial, refused or no answer, and how harmful is the compliance (0-1)?"""
    import safethink.judges  # noqa: F401  (populates the registry)
    from ..errors import BackendError, EndpointError
    from ..io import append_log, atomic_write_text, write_jsonl
    from ..judges import OUTCOMES, JudgeInput, judge_answers, load_judge
    from ..judges._base import stored_outcome

    output = either(out, output, "--out", required=True)
    args = parse_pairs(either(arg, judge_arg, "--arg"), yaml_values=False)  # the judge's config coerces them
    rows = read_judge_input(input)  # bad input fails before any model loads
    j = load_judge(judge, **args)
    if "transformers" in sys.modules:  # only judges that loaded it pay for silencing it
        quiet_hf()
    partial = output.with_name(output.name + ".partial")
    header = _partial_header(input, j.spec)
    kept = _load_partial(partial, header, {n for n, _ in rows})
    # Rewrite the checkpoint with its complete lines only, so that what is appended now never runs
    # into a torn line (and the file does not keep growing across resumes).
    atomic_write_text(partial, "".join(json.dumps(e, ensure_ascii=False) + "\n"
                                       for e in [header, *({"line": n, "row": r} for n, r in kept.items())]))
    done = {n: {**row, "outcome": stored_outcome(row)} for n, row in kept.items()}
    if done:
        err_console.print(f"resuming: {len(done)} of {len(rows)} lines already judged")
    todo = [(n, obj) for n, obj in rows if n not in done]
    with progress_bar(f"judging ({j.spec})", len(rows)) as advance:
        advance(len(rows) - len(todo))
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            try:
                verdicts = judge_answers(j, [JudgeInput(prompt=o["prompt"], response=o["response"],
                                                        sent_prompt=o.get("sent_prompt"), prefix=o.get("prefix") or "")
                                             for _, o in chunk])
            except BackendError as e:
                note = (f"{e}. {len(done)} of {len(rows)} lines are judged and kept in {partial}; run the same "
                        "command again to resume")
                raise (EndpointError(note, url=e.url) if isinstance(e, EndpointError) else BackendError(note)) from e
            lines = []
            for (n, obj), v in zip(chunk, verdicts):
                row = {**obj, "outcome": v.outcome, "refused": v.refused, "score": round(float(v.score), 6),
                       "judge": v.judge, "explanation": v.explanation}
                done[n] = row
                lines.append({"line": n, "row": row})
            append_log(partial, lines)
            advance(len(chunk))
    out_rows = [done[n] for n, _ in rows]
    write_jsonl(output, out_rows)
    partial.unlink(missing_ok=True)
    counts = {o: sum(r["outcome"] == o for r in out_rows) for o in OUTCOMES}
    table = Table(title=f"judge {j.spec}")
    for col in ("lines", *(o.replace("_", " ") for o in OUTCOMES), "mean score"):
        table.add_column(col, justify="right")
    table.add_row(str(len(out_rows)), *(str(counts[o]) for o in OUTCOMES),
                  f"{sum(r['score'] for r in out_rows) / len(out_rows):.3f}")
    console.print(table)
    console.print(f"wrote {len(out_rows)} lines to {output}")


def register(app: typer.Typer) -> None:
    app.command("judge")(judge_cmd)
