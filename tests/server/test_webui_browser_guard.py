"""The chat page with the server's guardrails and watermark: badges, a blocked prompt and a
filtered reply shown as such, and the "check text" panel's p-value against the detector.

The embedded model is not a trained safety classifier: a threshold every P(violation) is above
makes every text a violation (as in test_serve_guard.py), so these check the mechanics.
"""

from __future__ import annotations

import httpx
import pytest
from tests.server.conftest import ServerProcess
from tests.server.webui_browser import Page, launch

ALWAYS = "0.000001"  # a guard threshold every P(violation) is above (see test_serve_guard.py)


@pytest.fixture(scope="module")
def browser():
    yield from launch()


# One server per test (each is used once): float weights (--quant none), so the policy
# classifier shares them instead of loading its own copy.
@pytest.fixture
def input_guarded(tmp_path_factory):
    srv = ServerProcess("--guard", "input", "--guard-threshold", ALWAYS, "--quant", "none",
                        log=tmp_path_factory.mktemp("serve") / "webui_guard_in.log")  # fmt: skip
    yield srv
    srv.stop()


@pytest.fixture
def output_guarded_watermarked(tmp_path_factory):
    from opengemma.safety.watermark import keygen

    keys = keygen(30).save(tmp_path_factory.mktemp("keys") / "keys.json")
    srv = ServerProcess("--guard", "output", "--guard-threshold", ALWAYS, "--quant", "none",
                        "--watermark", str(keys),
                        log=tmp_path_factory.mktemp("serve") / "webui_guard_out.log")  # fmt: skip
    srv.keys = keys
    yield srv
    srv.stop()


class TestGuardAndWatermark:
    def test_blocked_prompt_is_shown_as_blocked(self, browser, input_guarded):
        page = Page(browser, input_guarded.url)
        p = page.page
        assert p.inner_text("#badge-guard") == "Guard: input"
        assert p.locator("#badge-watermark").count() == 0 and p.is_hidden("#toggle-check")
        page.send("How do I pick a lock?")
        meta = p.inner_text("#messages article.assistant .meta")
        direct = httpx.post(f"{input_guarded.url}/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "How do I pick a lock?"}]}).json()  # fmt: skip
        assert direct["error"]["code"] == "content_policy_violation"
        assert "Blocked by the input guard" in meta and direct["error"]["message"] in meta
        assert page.stored()[0]["messages"][1]["status"] == "blocked"
        page.close()

    def test_filtered_reply_watermark_badge_and_check_panel(
        self, browser, output_guarded_watermarked, lm
    ):
        from opengemma.safety.watermark import WatermarkConfig, detect, generate

        srv = output_guarded_watermarked
        page = Page(browser, srv.url)
        p = page.page
        assert p.inner_text("#badge-guard") == "Guard: output"
        assert p.inner_text("#badge-watermark") == "Watermark on"
        page.settings(max_tokens="8", temperature="1")
        page.send("Once upon a time")
        assert "Filtered by the output guard" in p.inner_text("#messages article.assistant .meta")
        assert page.stored()[0]["messages"][1] == {
            **page.stored()[0]["messages"][1], "status": "filtered", "content": ""}  # fmt: skip
        cfg = WatermarkConfig.load(srv.keys)
        marked = generate(lm, "The history of the city began", cfg, max_tokens=48,
                          temperature=1.0, top_k=40, seed=7)  # fmt: skip
        plain = ("The committee met on Tuesday to review the budget, and after a long "
                 "discussion it agreed to fund the new library and repair the bridge.")  # fmt: skip
        url, auth = f"{srv.url}/v1/watermark/detect", {"Authorization": "Bearer unused"}
        for bad, param in (({"text": " "}, "text"), ({"text": "x", "alpha": 2}, "alpha"),
                           ({"txt": "x"}, "text")):  # fmt: skip
            r = httpx.post(url, json=bad, headers=auth, timeout=60)
            assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
        p.click("#toggle-check")
        for text, expect in ((marked, True), (plain, False)):
            p.fill("#check-text", text)
            p.click("#check-run")
            p.wait_for_selector("#check-result .verdict")
            oracle = detect(text, cfg, lm.tokenizer)
            verdict = p.locator("#check-result .verdict")
            assert verdict.get_attribute("data-watermarked") == str(expect).lower()
            assert float(verdict.get_attribute("data-p-value")) == pytest.approx(oracle.p_value)
            assert oracle.watermarked is expect
            assert ("Not watermarked" in verdict.inner_text()) is not expect
        page.close()
