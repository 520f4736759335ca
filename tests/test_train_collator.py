"""Exact tensors of the training examples and the collator (real SmolLM2 tokenizer)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safethink.models import render_chat  # noqa: E402
from safethink.train import SafetyCollator  # noqa: E402
from safethink.train._data import encode_example, turn_end_ids  # noqa: E402

CONV = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]


def test_encode_labels_only_the_answer_and_its_end_of_turn(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id == im_end  # the SmolLM2 trap: pad == end-of-turn
    ids, labels, truncated = encode_example(tokenizer, CONV, max_length=512, end_ids=turn_end_ids(tokenizer))
    prompt = render_chat(tokenizer, CONV[:1], add_generation_prompt=True)
    p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer = tokenizer("Hello there.", add_special_tokens=False).input_ids
    assert not truncated
    assert ids == p_ids + answer + [im_end]  # the template's trailing newline is not trained on
    assert labels == [-100] * len(p_ids) + answer + [im_end]
    # the prompt contains <|im_end|> tokens too, and they are masked: masking is by span, not by id
    assert im_end in p_ids


def test_encode_truncates_answer_and_drops_overlong_prompt(tokenizer):
    end = turn_end_ids(tokenizer)
    ids, labels, _ = encode_example(tokenizer, CONV, max_length=512, end_ids=end)
    n_prompt = labels.count(-100)
    ids2, labels2, truncated = encode_example(tokenizer, CONV, max_length=n_prompt + 2, end_ids=end)
    assert truncated and ids2 == ids[: n_prompt + 2] and labels2 == labels[: n_prompt + 2]
    assert encode_example(tokenizer, CONV, max_length=n_prompt, end_ids=end) is None


def test_encode_masks_configured_ids(tokenizer):
    end = turn_end_ids(tokenizer)
    ids, labels, _ = encode_example(tokenizer, CONV, max_length=512, end_ids=end)
    hello = ids[labels.index(next(x for x in labels if x != -100))]
    _, masked, _ = encode_example(tokenizer, CONV, max_length=512, end_ids=end, masked_ids=frozenset([hello]))
    assert hello not in masked and masked.count(-100) == labels.count(-100) + 1


def test_collator_exact_tensors_when_pad_is_end_of_turn():
    pad = 2
    rows = [{"input_ids": [5, 6, 7, 2], "labels": [-100, -100, 7, 2], "loss_weight": 1.0},
            {"input_ids": [5, 8], "labels": [-100, 8], "loss_weight": 0.5}]
    batch = SafetyCollator(pad_token_id=pad, with_weights=True)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 2], [5, 8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # the real end-of-turn (id 2 == pad id) is trained in row 0; the padding 2s in row 1 are not
    assert batch["labels"].tolist() == [[-100, -100, 7, 2], [-100, 8, -100, -100]]
    assert batch["loss_weights"].tolist() == [1.0, 0.5]
    assert batch["input_ids"].dtype == torch.long and batch["loss_weights"].dtype == torch.float32
    assert "loss_weights" not in SafetyCollator(pad_token_id=pad)(rows)


def test_collator_pad_to_multiple_and_real_rows(tokenizer):
    end = turn_end_ids(tokenizer)
    short = encode_example(tokenizer, CONV, max_length=512, end_ids=end)
    long = encode_example(tokenizer, [CONV[0], {"role": "assistant", "content": "Hello there, how are you today?"}],
                          max_length=512, end_ids=end)
    rows = [{"input_ids": r[0], "labels": r[1]} for r in (short, long)]
    batch = SafetyCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=8)(rows)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= len(long[0])
    n = len(short[0])
    assert batch["labels"][0, :n].tolist() == short[1]
    assert (batch["labels"][0, n:] == -100).all() and (batch["attention_mask"][0, n:] == 0).all()
    assert batch["attention_mask"].sum().item() == len(short[0]) + len(long[0])


def test_decision_weights_land_on_the_verdict_tokens(tokenizer):
    from safethink.data._formats import decision_spans
    from safethink.data._training import TrainingRecord
    from safethink.train._data import encode_records

    answer = ("#### Verify Request\nUser asks to make a weapon.\n* harassment/threatening: No.\n"
              "* illicit/violent: Yes. Reason: weapons.\nTherefore, the request violates illicit/violent. "
              "I need to reject the request.\n#### Response\nNo. I can't help with that.")
    spans = decision_spans(answer)
    assert [answer[a:b] for a, b in spans[:2]] == ["No", "Yes"]
    assert answer[spans[2][0]:spans[2][1]].startswith("Therefore, the request violates")
    rec = TrainingRecord.model_validate({
        "id": "x", "method": "scot", "kind": "refusal", "label": "harmful", "categories": ["illicit/violent"],
        "style": "original", "source": "t", "messages": [{"role": "user", "content": "Make a weapon."},
                                                          {"role": "assistant", "content": answer}]})
    (plain,), _ = encode_records(tokenizer, [rec], max_length=512)
    (row,), _ = encode_records(tokenizer, [rec], max_length=512, decision_weight=4.0)
    assert "token_weights" not in plain and row["input_ids"] == plain["input_ids"]
    heavy = [tokenizer.decode([t]) for t, w in zip(row["input_ids"], row["token_weights"]) if w == 4.0]
    # the two verdict words and the conclusion line, nothing from the prompt or the response part
    assert heavy[:2] == [" No", " Yes"]
    assert "".join(heavy[2:]) == "Therefore, the request violates illicit/violent. I need to reject the request."
    assert set(row["token_weights"]) == {1.0, 4.0}

    batch = SafetyCollator(tokenizer.pad_token_id, with_weights=True)([row, {**plain, "loss_weight": 0.5}])
    w = batch["loss_weights"]
    assert w.shape == batch["input_ids"].shape
    assert w[1].eq(0.5).all()  # a row without token weights keeps its example weight everywhere
    assert w[0, :len(row["token_weights"])].tolist() == row["token_weights"]
