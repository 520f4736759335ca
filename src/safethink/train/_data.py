"""Training records -> token ids and labels, with the one chat template (models.render_chat)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..data._training import TrainingRecord, file_sha256, load_training_set, parse_record
from ..errors import InputError
from ..io import iter_jsonl
from ..models._chat import split_prompt_completion
from ._losses import IGNORE_INDEX


@dataclass(frozen=True)
class TrainingData:
    records: list[TrainingRecord]
    data_hash: str
    """The manifest's ``content_hash`` (a built set) or the file's sha256 (a single JSONL file)."""
    manifest: dict[str, Any] | None


def load_training_data(path: str | Path) -> TrainingData:
    """A built training set directory (manifest + shards, hashes verified) or one JSONL file."""
    p = Path(path)
    if p.is_dir():
        manifest, records = load_training_set(p)
        return TrainingData(records, manifest.content_hash, manifest.model_dump())
    if p.is_file():
        records = [parse_record(obj, path=p, line=n) for n, obj in iter_jsonl(p)]
        return TrainingData(records, file_sha256(p), None)
    raise InputError("no such training set (expected a directory from `safethink data build` or a .jsonl file)",
                     path=str(p))


def check_method(records: list[TrainingRecord], method: str, where: str) -> None:
    """SCoT training needs SCoT records and R2D training R2D records; SFT takes either."""
    if not records:
        raise InputError("the training set has no records", path=where)
    if method == "sft":
        return
    wrong = [r for r in records if r.method != method]
    if wrong:
        raise InputError(f"record {wrong[0].id!r} has method {wrong[0].method!r} but training method is "
                         f"{method!r} ({len(wrong)} of {len(records)} records differ)", path=where)


def turn_end_ids(tokenizer: Any) -> set[int]:
    """Ids that end an assistant turn (``<|im_end|>``, EOS, ...), the same set generation stops on."""
    from ..models._hf import end_of_turn_ids

    no_gen_config = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=None))
    return set(end_of_turn_ids(tokenizer, no_gen_config))


def encode_example(
    tokenizer: Any, messages: list[dict[str, str]], *, max_length: int, end_ids: set[int],
    masked_ids: frozenset[int] = frozenset(),
) -> tuple[list[int], list[int], bool] | None:
    """``(input_ids, labels, truncated)`` for one conversation, or None if the prompt alone does
    not fit in ``max_length``.

    Only the final assistant turn is labelled, up to and including its end-of-turn token (so the
    model learns to stop); text the template puts after that token (a newline) is dropped, since
    generation never produces it. Prompt and answer are tokenised separately, exactly as at
    inference, where the prompt is tokenised alone and the answer is generated after it.
    Labels of ``masked_ids`` (e.g. ``[RETHINK]`` when configured) are ``-100``.
    """
    prompt, completion = split_prompt_completion(tokenizer, messages)
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(completion, add_special_tokens=False).input_ids
    ends = [i for i, t in enumerate(c) if t in end_ids]
    if ends:
        c = c[: ends[-1] + 1]
    elif tokenizer.eos_token_id is not None:  # template without an end-of-turn marker
        c = c + [tokenizer.eos_token_id]
    if len(p) >= max_length:
        return None
    truncated = len(p) + len(c) > max_length
    c = c[: max_length - len(p)]
    labels = [IGNORE_INDEX] * len(p) + [IGNORE_INDEX if t in masked_ids else t for t in c]
    return p + c, labels, truncated


@dataclass(frozen=True)
class EncodeStats:
    examples: int
    dropped_too_long: int
    truncated: int
    tokens: int
    trained_tokens: int


def decision_token_weights(tokenizer: Any, messages: list[dict[str, str]], n_tokens: int, weight: float) -> list[float]:
    """Per-token weights of one encoded SCoT example: ``weight`` on the tokens of its decisions (each
    rule's ``Yes``/``No`` and the conclusion line, see ``decision_spans``), 1 elsewhere."""
    from ..data._formats import decision_spans

    prompt, completion = split_prompt_completion(tokenizer, messages)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    enc = tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    spans = decision_spans(completion)
    out = [1.0] * n_tokens
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        j = n_prompt + i
        if j < n_tokens and b > a and any(a < e and s < b for s, e in spans):
            out[j] = weight
    return out


def encode_records(
    tokenizer: Any, records: list[TrainingRecord], *, max_length: int, retain_weight: float = 1.0,
    masked_ids: frozenset[int] = frozenset(), decision_weight: float = 1.0,
) -> tuple[list[dict[str, Any]], EncodeStats]:
    """Rows ``{"input_ids", "labels", "loss_weight"}``; ``loss_weight`` is ``retain_weight`` for
    retain records and 1 for refusal records (SCoT's lambda). With ``decision_weight != 1``, SCoT
    records also get ``token_weights`` (see ``decision_token_weights``)."""
    end_ids = turn_end_ids(tokenizer)
    rows: list[dict[str, Any]] = []
    dropped = truncated = tokens = trained = 0
    for r in records:
        msgs = [m.model_dump() for m in r.messages]
        enc = encode_example(tokenizer, msgs, max_length=max_length, end_ids=end_ids, masked_ids=masked_ids)
        if enc is None:
            dropped += 1
            continue
        ids, labels, cut = enc
        truncated += cut
        tokens += len(ids)
        trained += sum(1 for x in labels if x != IGNORE_INDEX)
        row = {"input_ids": ids, "labels": labels, "loss_weight": retain_weight if r.kind == "retain" else 1.0}
        if decision_weight != 1.0 and r.method == "scot":
            row["token_weights"] = decision_token_weights(tokenizer, msgs, len(ids), decision_weight)
        rows.append(row)
    return rows, EncodeStats(len(rows), dropped, truncated, tokens, trained)
