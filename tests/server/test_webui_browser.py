"""The chat page at `/`, driven in a real headless Chromium (Debian's `chromium`, through
Playwright from PyPI) against real `opengemma serve` processes on 127.0.0.1.

Every page records the requests the browser makes; each test ends by checking that none left
127.0.0.1. Replies come from the embedded Gemma 3 270M with short token budgets; the two
sanitizer tests feed crafted replies (an imported conversation, an intercepted SSE stream),
since the renderer is what they test; they run with the page's Content-Security-Policy
bypassed, so the renderer alone keeps the page inert.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import httpx
import pytest
from tests.server.conftest import API_KEY
from tests.server.webui_browser import Page, launch

HOSTILE = [
    "<script>window.__pwned = 'script'</script>",
    '<img src="x" onerror="window.__pwned = \'onerror\'">',
    "<iframe src=\"javascript:window.__pwned='iframe'\"></iframe>",
    "[click me](javascript:window.__pwned='link')",
    "[tabbed](java\tscript:window.__pwned='tab')",
    '<a href="#" onclick="window.__pwned=\'click\'">a</a>',
    '<svg onload="window.__pwned=\'svg\'"></svg>',
    "![pixel](http://198.51.100.7/pixel.png)",
    "**bold <b onmouseover=alert(1)>x</b>**",
    "```html\n<script>window.__pwned = 'code'</script>\n```",
]


@pytest.fixture(scope="module")
def browser():
    yield from launch()


@pytest.fixture
def page(browser, server):
    p = Page(browser, server.url)
    p.settings(api_key=API_KEY, temperature="0", max_tokens="24")
    yield p
    p.close()


def assert_inert(page) -> None:
    """The messages hold only the renderer's own elements: no script, no handlers, safe links."""
    found = page.evaluate(
        """() => {
      const box = document.getElementById('messages');
      const bad = [];
      for (const el of box.querySelectorAll('*')) {
        const tag = el.tagName.toLowerCase();
        const foreign = ['script', 'img', 'iframe', 'svg', 'object', 'embed', 'b', 'style'];
        if (foreign.includes(tag)) bad.push(tag);
        for (const a of el.attributes) if (a.name.startsWith('on')) bad.push(tag + ' ' + a.name);
        const href = el.getAttribute('href');
        if (tag === 'a' && !/^(https?:|mailto:)/.test(href)) bad.push('href ' + href);
      }
      return {bad, pwned: window.__pwned ?? null};
    }"""
    )
    assert found == {"bad": [], "pwned": None}


def test_streamed_reply_grows_and_equals_the_api_answer(page, server):
    p = page.page
    # the reply's text length at every change of the page's reply element
    p.evaluate(
        """() => { window.__lengths = [];
      new MutationObserver(() => {
        const c = document.querySelector('#messages article.assistant:last-of-type .content');
        if (c) window.__lengths.push(c.textContent.length);
      }).observe(document.getElementById('messages'), {childList: true, subtree: true}); }"""
    )
    page.send("Name three primary colours.")
    lengths = [n for n in p.evaluate("window.__lengths") if n > 0]
    assert len(set(lengths)) >= 3, f"the reply did not grow in steps: {lengths}"
    assert lengths == sorted(lengths)
    body = page.chat_bodies()[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    reply = page.stored()[0]["messages"][1]
    # the same request without streaming, from outside the browser: greedy, so the same text
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    out = httpx.post(f"{server.url}/v1/chat/completions", json=plain, timeout=120,
                     headers={"Authorization": f"Bearer {API_KEY}"}).json()  # fmt: skip
    assert reply["content"] == out["choices"][0]["message"]["content"]
    assert reply["stats"]["tokens"] == out["usage"]["completion_tokens"]
    stats = p.inner_text("#messages article.assistant .meta")
    assert f"{out['usage']['completion_tokens']} tokens" in stats
    assert "tok/s" in stats and "TTFT" in stats


def test_stop_mid_stream_frees_the_slot(page, server):
    p = page.page
    page.settings(max_tokens="600")
    aborted = server.metric("opengemma:num_requests_aborted_total", reason="abort")
    for how in ("Escape", "button"):
        if how == "Escape":
            page.send("Tell me a very long story about a dragon.", wait=False)
        else:
            p.click("#messages article.assistant button[data-action=regenerate]")
        p.wait_for_function(
            "document.querySelector('#messages article.assistant .content').textContent.length > 5",
            timeout=120_000,
        )
        assert server.metric("opengemma:num_requests_running") == 1
        if how == "Escape":
            p.keyboard.press("Escape")
        else:
            p.click("#stop")
        page.wait_idle()
        assert p.locator("#messages .status-stopped").count() == 1
        end = time.monotonic() + 30
        while server.metric("opengemma:num_requests_running") != 0 and time.monotonic() < end:
            time.sleep(0.2)
        assert server.metric("opengemma:num_requests_running") == 0
    assert server.metric("opengemma:num_requests_aborted_total", reason="abort") == aborted + 2
    reply = page.stored()[0]["messages"][1]
    assert reply["status"] == "stopped" and reply["content"]  # the partial reply is kept


def test_conversations_survive_reload_and_round_trip_as_json(browser, page, tmp_path):
    p = page.page
    page.settings(max_tokens="6", system="Answer briefly.")
    page.send("Hello there")
    first = page.stored()[0]
    p.click(".conv.active .conv-rename")
    p.fill(".rename-box", "Greeting")
    p.press(".rename-box", "Enter")
    p.click("#new-chat")
    page.send("Second chat")
    page.reload()
    titles = p.locator(".conv-open").all_inner_texts()
    assert sorted(titles) == ["Greeting", "Second chat"]
    assert p.input_value("#set-system") == "Answer briefly."
    assert p.input_value("#set-max-tokens") == "6"
    p.click(".conv-open >> text=Greeting")
    assert p.locator("#messages article.user .content").inner_text() == "Hello there"
    assert p.locator("#messages article.assistant .content").inner_text().strip() == first[
        "messages"][1]["content"].strip()  # fmt: skip
    with p.expect_download() as download:
        p.click("#export")
    exported = tmp_path / "export.json"
    download.value.save_as(exported)
    doc = json.loads(exported.read_text())
    assert doc["format"] == "opengemma.conversations"
    assert {c["title"] for c in doc["conversations"]} == {"Greeting", "Second chat"}
    p.click(".conv.active .conv-delete")
    page.reload()
    assert p.locator(".conv-open").all_inner_texts() == ["Second chat"]
    p.set_input_files("#import-file", str(exported))
    # the import reads the file asynchronously: wait for the list to be redrawn
    p.wait_for_function("document.querySelectorAll('.conv-open').length === 3")
    assert sorted(p.locator(".conv-open").all_inner_texts()) == [
        "Greeting", "Second chat", "Second chat"]  # fmt: skip
    bad = tmp_path / "bad.json"
    bad.write_text('{"conversations": [{"messages": [{"role": "robot", "content": "x"}]}]}')
    p.set_input_files("#import-file", str(bad))
    assert 'role must be "user" or "assistant"' in p.inner_text("#notice")


def test_imported_reply_with_html_is_inert(page, tmp_path):
    p = page.page
    conv = {
        "title": "Hostile",
        "messages": [
            {"role": "user", "content": "<img src=x onerror=\"window.__pwned='user'\">"},
            {"role": "assistant", "content": "\n\n".join(HOSTILE)},
        ],
    }
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"format": "opengemma.conversations", "conversations": [conv]}))
    p.set_input_files("#import-file", str(path))
    p.wait_for_selector("#messages article.assistant")
    p.mouse.move(200, 300)
    assert_inert(p)
    text = p.inner_text("#messages")
    assert "<script>window.__pwned = 'script'</script>" in text  # shown as the text it is
    assert "onerror" in text
    assert p.locator("#messages a").count() == 1  # only the image, as a link; no javascript:
    assert p.get_attribute("#messages a", "href") == "http://198.51.100.7/pixel.png"
    assert p.locator("#messages .code-block code[data-lang=html]").count() == 1
    page.reload()  # and again from storage
    assert_inert(p)


def sse(*events: dict) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def test_crafted_stream_renders_inert_with_highlighted_code(browser, server):
    page = Page(browser, server.url, permissions=["clipboard-read", "clipboard-write"])
    pieces = ["Here:\n\n<img src=x on", "error=\"window.__pwned='split'\"> and <scr",
              "ipt>window.__pwned='s'</script>\n\n```python\ndef add(a, b):\n",
              "    return a + b  # sum\n```\n"]  # fmt: skip
    chunk = lambda delta, finish=None: {"object": "chat.completion.chunk", "choices": [  # noqa: E731
        {"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    stream = sse(chunk({"role": "assistant", "content": ""}),
                 *[chunk({"content": t}) for t in pieces], chunk({}, "stop"),
                 {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 31,
                                           "total_tokens": 40}})  # fmt: skip
    page.page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"Content-Type": "text/event-stream"}, body=stream))  # fmt: skip
    page.send("Show me")
    p = page.page
    assert_inert(p)
    assert "<img src=x onerror=" in p.inner_text("#messages article.assistant .content")
    code = p.locator("#messages .code-block code[data-lang=python]")
    assert code.inner_text() == "def add(a, b):\n    return a + b  # sum"
    assert code.locator(".tok-keyword").all_inner_texts() == ["def", "return"]
    assert code.locator(".tok-comment").all_inner_texts() == ["# sum"]
    assert "31 tokens" in p.inner_text("#messages article.assistant .meta")
    p.click("#messages .code-block .copy")
    assert p.evaluate("navigator.clipboard.readText()") == code.inner_text()
    page.close()


def test_settings_reach_the_request(page, server):
    p = page.page
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"]}  # fmt: skip
    page.settings(system="You answer in JSON.", temperature="0.5", top_p="0.8", top_k="20",
                  min_p="0.05", max_tokens="12", seed="1234", stop="END\nSTOP",
                  schema=json.dumps(schema))  # fmt: skip
    assert p.locator("#model option").all_inner_texts() == ["gemma-3-270m"]
    page.send("What is the capital of France?")
    body = page.chat_bodies()[-1]
    assert body == {
        "model": "gemma-3-270m",
        "messages": [{"role": "system", "content": "You answer in JSON."},
                     {"role": "user", "content": "What is the capital of France?"}],
        "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.5, "top_p": 0.8, "top_k": 20, "min_p": 0.05, "max_tokens": 12,
        "seed": 1234, "stop": ["END", "STOP"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "response",
                                                                   "schema": schema}},
    }  # fmt: skip
    reply = page.stored()[0]["messages"][1]
    assert reply["content"].startswith("{"), reply  # the server applied the schema
    page.reload()
    assert p.input_value("#set-seed") == "1234" and p.input_value("#set-top-k") == "20"
    assert json.loads(p.input_value("#set-schema")) == schema
    page.settings(schema="{not json")
    assert "not JSON" in p.inner_text("#schema-error")


def test_edit_a_turn_and_regenerate(page):
    p = page.page
    page.settings(max_tokens="6")
    page.send("Hi")
    page.send("Tell me more")
    p.click("#messages article.user >> nth=0 >> button[data-action=edit]")
    p.fill("#messages .edit-box", "Name a colour.")
    p.press("#messages .edit-box", "Enter")
    page.wait_idle()
    body = page.chat_bodies()[-1]
    assert body["messages"] == [{"role": "user", "content": "Name a colour."}]
    msgs = page.stored()[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["content"] == "Name a colour." and msgs[1]["content"]
    p.click("#messages article.assistant button[data-action=regenerate]")
    page.wait_idle()
    assert page.chat_bodies()[-1] == body and len(page.chat_bodies()) == 4
    assert page.stored()[0]["messages"][1]["content"] == msgs[1]["content"]  # greedy: same


def test_missing_api_key_says_so(browser, server):
    page = Page(browser, server.url)
    p = page.page
    assert p.is_visible("#badge-auth") and "API key" in p.inner_text("#notice")
    page.send("Hi")
    assert "API key" in p.inner_text("#messages article.assistant .meta")
    assert p.is_visible("#settings")  # opened at the key field
    page.settings(api_key=API_KEY, max_tokens="4")
    p.click("#messages article.assistant button[data-action=regenerate]")
    page.wait_idle()
    assert page.stored()[0]["messages"][1]["content"]
    page.close()


def test_themes_and_phone_width(browser, server, tmp_path):
    out = os.environ.get("OPENGEMMA_WEBUI_SHOTS")  # set to write the docs' screenshots there
    backgrounds = {}
    for scheme in ("light", "dark"):
        for name, size in (("desktop", (1200, 760)), ("phone", (390, 760))):
            page = Page(browser, server.url, color_scheme=scheme,
                        viewport={"width": size[0], "height": size[1]})  # fmt: skip
            p = page.page
            backgrounds[scheme] = p.evaluate("getComputedStyle(document.body).backgroundColor")
            # no sideways scrolling at either width
            assert p.evaluate("document.documentElement.scrollWidth") <= size[0]
            assert p.is_visible("#prompt") and p.is_visible("#send")
            if name == "phone":
                assert not p.locator("#sidebar").is_visible() or p.evaluate(
                    "document.getElementById('sidebar').getBoundingClientRect().right <= 0")
                p.click("#open-sidebar")
                p.wait_for_function(
                    "document.getElementById('sidebar').getBoundingClientRect().left >= 0")
                p.click("#close-sidebar")
            p.screenshot(path=str(tmp_path / f"{scheme}-{name}.png"))
            if out:
                shutil.copy(tmp_path / f"{scheme}-{name}.png", out)
            page.close()
    assert backgrounds["light"] != backgrounds["dark"]


def test_page_and_assets_are_served_with_a_strict_policy(server):
    r = httpx.get(server.url + "/", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'self'" in csp and "unsafe" not in csp
    js = httpx.get(server.url + "/webui/app.js", timeout=30)
    assert js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.url + "/webui/nothing.js", timeout=30).status_code == 404
    assert httpx.get(server.url + "/webui/..%2Fapp.py", timeout=30).status_code == 404
    # every asset the page names is one the server has
    for ref in ("/webui/style.css", "/webui/app.js"):
        assert ref in r.text and httpx.get(server.url + ref, timeout=30).status_code == 200


def test_detect_needs_the_key_and_a_watermarked_server(server):
    url = f"{server.url}/v1/watermark/detect"
    assert httpx.post(url, json={"text": "hello"}, timeout=30).status_code == 401
    r = httpx.post(url, json={"text": "hello"}, timeout=30,
                   headers={"Authorization": f"Bearer {API_KEY}"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["code"] == "watermark_disabled"
    assert "--watermark" in r.json()["error"]["message"]
    info = httpx.get(f"{server.url}/v1/info", timeout=30).json()  # open, like /v1/models
    assert info["auth_required"] is True and info["watermark"]["enabled"] is False
    assert info["guard"]["stages"] == [] and info["model"] == "gemma-3-270m"
