"""Records -> ids + loss masks (with the real Gemma 3 tokenizer), packing, padding, scrubbing."""

from __future__ import annotations

import pytest
import torch

from opengemma.chat import chat_prompt_ids
from opengemma.tune.data import (
    Example,
    TuneDataError,
    build_examples,
    collate,
    encode_record,
    pack,
    read_jsonl,
    scrub_records,
    split_eval,
)


def test_prompt_completion_masks_only_the_completion_and_eos(gemma_tokenizer):
    tok = gemma_tokenizer
    ex = encode_record(tok, {"prompt": "Word: cat\nAnswer:", "completion": " <cat>"})
    prompt = [tok.bos_id, *tok.encode_plain("Word: cat\nAnswer:")]
    assert ex.ids[: len(prompt)] == prompt  # exactly what generation from the prompt sees
    assert ex.ids[-1] == tok.eos_id
    targets = [i for i, m in zip(ex.ids, ex.mask, strict=True) if m]
    assert tok.decode(targets) == " <cat>"
    assert ex.mask[: len(prompt)] == [0] * len(prompt)


def test_chat_masks_model_turns_and_their_end_of_turn(gemma_tokenizer):
    tok = gemma_tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi <start_of_turn>"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye!"},
    ]
    ex = encode_record(tok, {"messages": messages})
    # the prefix up to the last model answer is exactly the inference-time prompt
    prompt = chat_prompt_ids(tok, messages[:4])
    assert ex.ids[: len(prompt)] == prompt
    spans, cur = [], []
    for i, m in zip(ex.ids, ex.mask, strict=True):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    assert len(spans) == 2
    assert [tok.decode(s[:-1]) for s in spans] == ["Hello.", "Goodbye!"]
    assert all(s[-1] == tok.end_of_turn_id for s in spans)
    assert tok.start_of_turn_id not in [i for i, m in zip(ex.ids, ex.mask, strict=True) if m]
    assert ex.ids.count(tok.start_of_turn_id) == 4  # user text "<start_of_turn>" stays text


def test_text_records_truncation_and_bad_records(gemma_tokenizer, tmp_path):
    tok = gemma_tokenizer
    ex = encode_record(tok, {"text": "one two three"})
    assert ex.mask == [0] + [1] * (len(ex.ids) - 1)
    long = {"prompt": "x " * 50, "completion": "y"}
    rows, stats = build_examples(tok, [long, {"text": "short text"}], max_len=10)
    assert stats.truncated == 1 and stats.dropped_empty == 1 and len(rows) == 1
    with pytest.raises(TuneDataError, match="record 1: a record needs 'messages'"):
        build_examples(tok, [{"input": "x"}], max_len=10)
    with pytest.raises(TuneDataError, match="record 1: the conversation has no assistant turn"):
        build_examples(tok, [{"messages": [{"role": "user", "content": "hi"}]}], max_len=10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": broken\n')
    with pytest.raises(TuneDataError, match=r"bad.jsonl:3: not a JSON line"):
        read_jsonl(bad)
    with pytest.raises(TuneDataError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_pack_collate_and_split():
    a, b, c = (
        Example([2, 5, 6], [0, 1, 1]),
        Example([2, 7], [0, 1]),
        Example([2, 8, 9, 10], [0, 0, 1, 1]),
    )
    rows = pack([a, b, c], max_len=5)
    assert [r.ids for r in rows] == [[2, 5, 6, 2, 7], [2, 8, 9, 10]]
    assert rows[0].mask == [0, 1, 1, 0, 1]
    ids, mask = collate([a, c], pad_id=0)
    assert ids.tolist() == [[2, 5, 6, 0], [2, 8, 9, 10]]
    assert mask.tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]] and mask.dtype == torch.float32
    records = [{"text": str(i)} for i in range(20)]
    train, held = split_eval(records, 0.1, seed=0)
    assert len(held) == 2 and len(train) == 18
    assert not {r["text"] for r in held} & {r["text"] for r in train}
    assert split_eval(records, 0.1, seed=0) == (train, held)  # deterministic


def test_scrubber_replaces_personal_data_before_tokenization():
    logged: list[str] = []
    records = [
        {"prompt": "Write to jane.roe@posteo.de about it", "completion": "Done."},
        {
            "messages": [
                {"role": "user", "content": "My card is 4539 1488 0343 6467"},
                {"role": "assistant", "content": "Noted."},
            ]
        },
        {"prompt": "Nothing here", "completion": "Fine."},
    ]
    out = scrub_records(records, logged.append)
    assert out[0]["prompt"] == "Write to <EMAIL> about it"
    assert out[1]["messages"][0]["content"] == "My card is <CREDIT_CARD>"
    assert out[2] == records[2]
    assert records[0]["prompt"].startswith("Write to jane")  # the caller's records are untouched
    assert "2 of 3 records changed" in logged[0] and "EMAIL 1" in logged[0]


def test_plan_splits_one_global_batch_across_processes_and_micro_batches():
    from opengemma.tune.plan import Plan

    rows = [Example([2, i], [0, 1]) for i in range(10)]
    one = Plan(rows, batch=4, grad_accum=1, world=1, seed=3, epochs=2)
    two = Plan(rows, batch=1, grad_accum=2, world=2, seed=3, epochs=2)
    assert one.total_steps == two.total_steps == 6  # ceil(10 / 4) steps per epoch, 2 epochs
    for step in range(6):
        split = [r for rank in (0, 1) for mb in two.micro_batches(step, rank) for r in mb]
        assert sorted(r.ids for r in split) == sorted(r.ids for r in one.step_rows(step))
    epoch0 = [r.ids[1] for s in range(3) for r in one.step_rows(s)]
    assert sorted(set(epoch0)) == list(range(10))  # every row each epoch (last step wraps)
    assert epoch0 != [r.ids[1] for s in range(3, 6) for r in one.step_rows(s)]  # reshuffled
