"""/v1/embeddings through the official `openai` client and /api/embed through the `ollama`
client, against a real `opengemma serve` process: the same vectors as lm.embed; bad input is a
400 naming the field."""

from __future__ import annotations

import base64
import concurrent.futures

import httpx
import numpy as np
import pytest
from tests.embed.conftest import MAX_SEQ
from tests.embed.test_parity import texts
from tests.server.conftest import ServerProcess

MODEL_ID = "tiny-embeddinggemma"
LONG = " ".join(["the fog ship"] * 60)  # ~180 tokens, over the limit of MAX_SEQ


@pytest.fixture(scope="module")
def server(tiny_embedding, tmp_path_factory):
    srv = ServerProcess("--model", str(tiny_embedding.path),
                        log=tmp_path_factory.mktemp("embed_serve") / "server.log")  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def oai(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def ollama_client(server):
    try:
        import ollama
    except ImportError:
        pytest.fail("the ollama client is needed: pip install -e '.[dev]'")
    return ollama.Client(host=server.url, timeout=120)


def test_openai_client_float_and_base64(oai, tiny_embed_lm):
    sample = texts(5, seed=6)
    expected = tiny_embed_lm.embed(sample)
    for fmt in ("float", "base64"):
        res = oai.embeddings.create(model=MODEL_ID, input=sample, encoding_format=fmt)
        rows = [d.embedding for d in res.data]
        if fmt == "base64":  # asked for explicitly, the client hands the string over as it came
            rows = [np.frombuffer(base64.b64decode(r), dtype="<f4") for r in rows]
        got = np.array(rows, dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
        assert [d.index for d in res.data] == list(range(5))
    assert res.model == MODEL_ID
    ids = tiny_embed_lm._embedders[None].tokenize(sample)
    assert res.usage.prompt_tokens == res.usage.total_tokens == sum(map(len, ids))
    default = oai.embeddings.create(model=MODEL_ID, input=sample[0])  # the client asks base64
    np.testing.assert_allclose(default.data[0].embedding, expected[0], atol=1e-6, rtol=0)


def test_openai_dimensions_task_and_token_ids(oai, tiny_embed_lm):
    sample = texts(3, seed=7)
    res = oai.embeddings.create(model=MODEL_ID, input=sample, dimensions=16,
                                extra_body={"task": "query"})  # fmt: skip
    got = np.array([d.embedding for d in res.data])
    np.testing.assert_allclose(got, tiny_embed_lm.embed(sample, 16, "query"), atol=1e-6)
    ids = tiny_embed_lm._embedders[None].tokenize(sample)
    res = oai.embeddings.create(model=MODEL_ID, input=ids, encoding_format="float")
    np.testing.assert_allclose(np.array([d.embedding for d in res.data]),
                               tiny_embed_lm.embed(sample), atol=1e-6)  # fmt: skip
    one = oai.embeddings.create(model=MODEL_ID, input=ids[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, tiny_embed_lm.embed(sample[0]), atol=1e-6)


@pytest.mark.parametrize("body,param,fragment", [
    ({"input": ""}, "input", "input[0] is an empty string"),
    ({"input": ["a rat", " "]}, "input", "input[1] is an empty string"),
    ({"input": []}, "input", "empty list"),
    ({"input": [[]]}, "input", "input[0] is an empty list"),
    ({"input": [[5, 99999]]}, "input", "outside the vocabulary"),
    ({"input": "a rat", "dimensions": 999}, "dimensions", "1 to 48"),
    ({"input": "a rat", "dimensions": 0}, "dimensions", "1 to 48"),
    ({"input": "a rat", "dimensions": "wide"}, "dimensions", "integer"),
    ({"input": "a rat", "encoding_format": "hex"}, "encoding_format", "float"),
    ({"input": "a rat", "task": "poetry"}, "task", "unknown task"),
    ({"input": LONG}, "input", f"over this model's limit of {MAX_SEQ}"),
])  # fmt: skip
def test_openai_bad_input(server, body, param, fragment):
    r = httpx.post(f"{server.url}/v1/embeddings", json={"model": MODEL_ID, **body}, timeout=60)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and fragment in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_openai_truncate_and_unknown_model(oai, server, tiny_embed_lm):
    res = oai.embeddings.create(model=MODEL_ID, input=LONG, extra_body={"truncate": True})
    np.testing.assert_allclose(res.data[0].embedding, tiny_embed_lm.embed(LONG), atol=1e-6)
    assert res.usage.prompt_tokens == MAX_SEQ
    r = httpx.post(f"{server.url}/v1/embeddings", json={"model": "gpt-x", "input": "a"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_ollama_client(ollama_client, tiny_embed_lm):
    sample = texts(4, seed=8)
    res = ollama_client.embed(model=MODEL_ID, input=sample)
    np.testing.assert_allclose(np.array(res.embeddings), tiny_embed_lm.embed(sample), atol=1e-6)
    assert res.model == MODEL_ID and res.prompt_eval_count > 0 and res.total_duration > 0
    res = ollama_client.embed(model=f"{MODEL_ID}:latest", input=sample[0], dimensions=16)
    np.testing.assert_allclose(res.embeddings[0], tiny_embed_lm.embed(sample[0], 16), atol=1e-6)
    res = ollama_client.embed(model=MODEL_ID, input=LONG)  # Ollama truncates by default
    np.testing.assert_allclose(res.embeddings[0], tiny_embed_lm.embed(LONG), atol=1e-6)
    assert res.prompt_eval_count == MAX_SEQ


def test_ollama_bad_input(ollama_client):
    import ollama

    cases = [
        ({"input": LONG, "truncate": False}, 400, "over this model's limit"),
        ({"input": ""}, 400, "input[0] is an empty string"),
        ({"input": []}, 400, "empty list"),
        ({"input": "a rat", "dimensions": 4096}, 400, "dimensions"),
    ]
    for kwargs, status, fragment in cases:
        with pytest.raises(ollama.ResponseError) as info:
            ollama_client.embed(model=MODEL_ID, **kwargs)
        assert info.value.status_code == status and fragment in info.value.error, info.value
    with pytest.raises(ollama.ResponseError) as info:
        ollama_client.embed(model="llama9", input="a rat")
    assert info.value.status_code == 404 and "not found" in info.value.error


def test_concurrent_requests_are_batched_correctly(oai, ollama_client, tiny_embed_lm):
    sample = texts(16, seed=9)
    expected = tiny_embed_lm.embed(sample)

    def one(i: int) -> np.ndarray:
        if i % 2:
            return np.array(ollama_client.embed(model=MODEL_ID, input=sample[i]).embeddings[0])
        res = oai.embeddings.create(model=MODEL_ID, input=sample[i], encoding_format="float")
        return np.array(res.data[0].embedding)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = np.stack(list(pool.map(one, range(16))))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
