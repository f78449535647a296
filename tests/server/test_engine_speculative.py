"""Speculative decoding inside the continuous-batching engine (the server's and batch jobs'): a
request decoding alone verifies n-gram drafts in one native call, and every request still gets
exactly the tokens of plain decoding, alone or batched, greedy or sampled, and what it leaves in
the prefix cache is what plain decoding would have left."""

from __future__ import annotations

import queue
import threading

import pytest

import opengemma
from opengemma.engine import Engine, EngineError, GenerationRequest, RequestHandle, TokenEvent
from opengemma.sampling import SamplingParams

PASSAGE = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, lit the great lamp, "
    "and wrote the weather, the passing ships and the state of the sea in a leather logbook."
)
COPY = f"{PASSAGE}\n\nRepeat the text above exactly.\n\n{PASSAGE[:40]}"


@pytest.fixture(scope="module")
def lm():
    lm = opengemma.load()  # int8 blocks and the native decode step
    assert lm.quant == "q8" and lm.model.native_decoder is not None
    return lm


def _run(engine: Engine, request: GenerationRequest) -> tuple[list[int], RequestHandle]:
    events: queue.Queue[TokenEvent] = queue.Queue()
    handle = engine.submit(request, events.put)
    tokens = []
    while (event := events.get(timeout=600)).finish_reason is None:
        tokens.append(event.token)
    assert event.finish_reason in ("stop", "length"), event.error
    if event.token >= 0:
        tokens.append(event.token)
    return tokens, handle


def _plain_tokens(lm, prompt_ids: list[int], max_tokens: int, params=None) -> list[int]:
    engine = Engine(lm.model, lm.tokenizer, max_batch=1).start()
    try:
        request = GenerationRequest(prompt_ids, max_tokens, params or SamplingParams())
        return _run(engine, request)[0]
    finally:
        engine.shutdown()


def test_a_copying_request_accepts_drafts_and_keeps_the_plain_tokens(lm):
    ids = lm.tokenizer.encode(COPY)
    engine = Engine(lm.model, lm.tokenizer, max_batch=2, speculative="ngram").start()
    try:
        tokens, handle = _run(engine, GenerationRequest(ids, 40))
    finally:
        engine.shutdown()
    assert tokens == _plain_tokens(lm, ids, 40)
    assert lm.tokenizer.decode(tokens) == lm.generate(COPY, max_tokens=40)
    assert handle.drafted > 0 and 0 < handle.accepted <= handle.drafted


def test_sampled_requests_draw_the_same_tokens_with_and_without_drafts(lm):
    ids = lm.tokenizer.encode(COPY)
    params = SamplingParams(temperature=0.8, top_k=40, seed=5)
    engine = Engine(lm.model, lm.tokenizer, max_batch=1, speculative="ngram").start()
    try:
        tokens, handle = _run(engine, GenerationRequest(ids, 32, params))
    finally:
        engine.shutdown()
    assert tokens == _plain_tokens(lm, ids, 32, params)
    assert handle.drafted > 0


def test_batched_and_alone_rows_mix_without_changing_any_output(lm):
    prompts = [COPY, "1, 2, 3, 4, 5, 6,", "def add(a, b):\n    return a + b\n\ndef add("]
    engine = Engine(lm.model, lm.tokenizer, max_batch=3, speculative="ngram").start()
    results: dict[int, list[int]] = {}
    try:
        requests = [GenerationRequest(lm.tokenizer.encode(p), 24 + 8 * i)
                    for i, p in enumerate(prompts)]  # fmt: skip
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i, _run(engine, requests[i])[0])) for i in range(len(prompts))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    finally:
        engine.shutdown()
    for i, p in enumerate(prompts):  # the longest one ends alone, drafting
        assert lm.tokenizer.decode(results[i]) == lm.generate(p, max_tokens=24 + 8 * i), p


def test_the_prefix_cache_holds_only_accepted_tokens(lm):
    """A request that stops inside a verified draft leaves prompt + output in the prefix cache,
    not the drafted positions after its stop: every snapshot is a prefix of what was decoded,
    and the next turn, which restores it, decodes as plain decoding does."""
    ids = lm.tokenizer.encode(COPY)
    plain = _plain_tokens(lm, ids, 40)
    at = next(k for k in range(12, 40) if plain[k] not in plain[:k])  # a token copied mid-run
    stop = frozenset({plain[at]})
    engine = Engine(lm.model, lm.tokenizer, max_batch=1, prefix_cache_bytes=64 << 20,
                    speculative="ngram").start()  # fmt: skip
    try:
        first, handle = _run(engine, GenerationRequest(ids, 40, stop_ids=stop))
        assert first == plain[: at + 1] and handle.accepted > 0
        decoded = ids + first
        for key in list(engine.prefix_cache._snaps):
            assert list(key) == decoded[: len(key)], "a snapshot holds tokens never decoded"
        follow = decoded + lm.tokenizer.encode(" Now once more:", add_bos=False)
        second, again = _run(engine, GenerationRequest(follow, 20))
    finally:
        engine.shutdown()
    assert again.cached_tokens > len(ids)  # prompt and output, stored by the first request
    assert second == _plain_tokens(lm, follow, 20)


def test_an_unknown_method_is_refused():
    with pytest.raises(EngineError, match="unknown speculative method"):
        Engine(None, type("T", (), {"eos_id": 1, "end_of_turn_id": 106})(), speculative="medusa")


def test_the_server_speculates_and_counts_drafts_in_its_metrics(lm):
    """`serve --speculative ngram`: a completion equals plain greedy decoding, and /metrics (read
    by prometheus_client's parser) counts the drafted and accepted tokens."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from opengemma.server.app import build_state, create_app
    from opengemma.server.state import ServerConfig

    state = build_state(ServerConfig(max_batch=2, prefix_cache_bytes=0, speculative="ngram"))
    try:
        with TestClient(create_app(state)) as client:
            body = {"model": state.model_id, "prompt": COPY, "max_tokens": 32, "temperature": 0}
            reply = client.post("/v1/completions", json=body)
            scraped = client.get("/metrics")
    finally:
        state.engine.shutdown()
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"] == lm.generate(COPY, max_tokens=32)
    samples = {s.name: s.value for f in text_string_to_metric_families(scraped.text)
               for s in f.samples}  # fmt: skip
    drafted = samples["opengemma:spec_decode_num_draft_tokens_total"]
    accepted = samples["opengemma:spec_decode_num_accepted_tokens_total"]
    assert drafted > 0 and 0 < accepted <= drafted
