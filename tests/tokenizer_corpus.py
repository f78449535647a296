"""Test strings for the tokenizer: hand-written edge cases plus a seeded random mix.

`corpus()` returns them all (about 330). Runs of 32 or more spaces are kept out of it: there
transformers' GGUF tokenizer differs from SentencePiece on purpose-built grounds (see
test_tokenizer.py::test_long_space_runs_follow_sentencepiece), so they are tested on their own.
"""

from __future__ import annotations

import random

CONTROL_TEXT = ["<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>"]

HANDWRITTEN: list[str] = [
    # empty and trivial
    "",
    " ",
    "a",
    "A",
    ".",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop—it's 'quoted' and \"double-quoted\"…",
    # whitespace runs: spaces, tabs, newlines, mixed, leading and trailing
    "  ",
    "   ",
    "    indented",
    "trailing   ",
    "  both  ",
    "a  b   c    d     e",
    " " * 31,
    "x" + " " * 31 + "y",
    "\t",
    "\t\t",
    "\ttab\tseparated\tvalues\t",
    "\t" * 31,
    "\t" * 40,
    "\n",
    "\n\n",
    "\n" * 31,
    "\n" * 45,
    "line1\nline2\r\nline3\rline4",
    "\r\n\r\n",
    " \n \n ",
    "\t \t \n\n  \t",
    "para one.\n\n\npara two.\n",
    "\u00a0non-breaking\u00a0space",
    "\u2003em\u2002en\u2009thin\u200bzero-width",
    "\u3000ideographic space\u3000",
    "\v\f vertical tab and form feed",
    # digits and numbers
    "0",
    "42",
    "3.14159265358979323846",
    "12345678901234567890123456789012345678901234567890",
    "1,000,000 and 1.000.000 and 1 000 000",
    "-17e+308",
    "0xDEADBEEF 0b1010 0o777",
    "２０２４年１２月３１日",
    "٠١٢٣٤٥٦٧٨٩ ۱۲۳",
    "Phone: +1 (555) 123-4567",
    # code
    "def f(x):\n    return x ** 2  # square\n",
    "class A:\n\tdef __init__(self):\n\t\tself.x = [1, 2, 3]\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    'import json\nprint(json.dumps({"a": 1, "b": [True, None]}))',
    '{"name": "Gemma", "size": 270, "tags": ["a", "b"], "nested": {"x": null}}',
    '[{"id":1},{"id":2}]',
    '<html><body><div class="x">Hi</div></body></html>',
    "<table><tr><td>1</td><td>2</td></tr></table>",
    "<h1>Title</h1><p>Para with <b>bold</b> and <i>italics</i>.</p>",
    "<b><b><b></b></b></b>",
    "<a href='https://example.com/path?q=1&r=2#frag'>link</a>",
    "SELECT * FROM users WHERE id = 42 AND name LIKE '%a%';",
    "#!/bin/bash\nset -euo pipefail\necho \"$HOME\" | grep -v '^#'\n",
    "x = lambda *args, **kw: (args, kw)",
    'fn main() { println!("{}", 1 << 3); }',
    "    if a:\n        b()\n    else:\n        c()\n",
    "// comment\n/* block */\n",
    "a->b => c <= d >= e != f == g",
    "$$\\sum_{i=1}^{n} i^2 = \\frac{n(n+1)(2n+1)}{6}$$",
    # CJK, Korean, Japanese
    "你好，世界！",
    "我爱自然语言处理。",
    "日本語のテキストです。カタカナとひらがな。",
    "한국어 문장입니다. 안녕하세요!",
    "中文English混合text测试123",
    "《红楼梦》是中国古典小说。",
    # Arabic, Hebrew, Hindi, other scripts
    "مرحبا بالعالم",
    "السَّلَامُ عَلَيْكُمْ",
    "שלום עולם",
    "नमस्ते दुनिया",
    "हिन्दी में लिखा गया वाक्य।",
    "বাংলা ভাষা",
    "தமிழ் மொழி",
    "ภาษาไทยไม่มีช่องว่าง",
    "Ελληνικά κείμενα",
    "Русский текст, ёжик.",
    "Tiếng Việt có dấu",
    "ქართული ენა",
    "አማርኛ ቋንቋ",
    "ᐃᓄᒃᑎᑐᑦ",
    # emoji, ZWJ sequences, skin tones, flags, keycaps
    "😀",
    "👍🏽",
    "👩‍👩‍👧‍👦",
    "👨🏿‍💻 coding",
    "🏳️‍🌈🏳️‍⚧️",
    "🇯🇵🇺🇸🇫🇷",
    "1️⃣2️⃣#️⃣",
    "❤️‍🔥 and ❤️",
    "🧑‍🤝‍🧑",
    "emoji at end 🎉",
    "🎉 emoji at start",
    "😀😃😄😁😆😅🤣😂🙂🙃",
    # combining marks, normalization forms
    "e\u0301",
    "é vs e\u0301",
    "a\u0300\u0301\u0302\u0303\u0304",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f",
    "ﬁ ligature ﬀ ﬂ",
    "Å Å Å",
    "한 vs \u1112\u1161\u11ab",
    # control characters
    "\x00",
    "\x00\x01\x02",
    "bell\x07",
    "\x1b[31mred\x1b[0m",
    "back\x08space",
    "\x7f del",
    "\x1f\x1e\x1d",
    "\u200e\u200f bidi marks",
    "\ufeffBOM at start",
    # byte fallback: characters outside the vocabulary
    "\U00020000\U00020001\U0002a6d6",
    "\U0002b740 ext C",
    "\ue000\ue001\uf8ff",
    "\U000f0000\U0010fffd",
    "\U0001d11e musical",
    "\U00013000 hieroglyph",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙",
    "\ufffd replacement char",
    "\u2581 literal lower one eighth block",
    "\u2581\u2581x",
    "<0x41> looks like a byte token",
    # control-token text and other added tokens inside text
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn><end_of_turn>",
    "<bos><bos>",
    "text<eos>more",
    "<pad><unk><mask>",
    "<unused0><unused99><unused6241>",
    "<unused6242> is not a token",
    "<start_of_turn",
    "start_of_turn>",
    "<<start_of_turn>>",
    "< start_of_turn >",
    "<START_OF_TURN>",
    "<start_of_image><end_of_image>",
    "[multimodal]",
    "prefix<start_of_turn>suffix",
    "  <start_of_turn>  ",
    "\n<end_of_turn>\n",
    "<b>not control</b><bos>",
    # punctuation-heavy and misc
    "!!!???...,,,;;;:::",
    "---___===+++",
    "~`@#$%^&*()[]{}|\\/<>",
    "a.b.c.d.e.f.g",
    "http://example.com/a/b/c?x=1&y=2",
    "user@example.com",
    "C:\\Program Files\\app\\bin",
    "«guillemets» „Anführungszeichen“ ‘single’",
    "•·°±×÷§¶©®™",
    "½ ¼ ¾ ² ³ µ",
    "→ ← ↑ ↓ ⇒ ⇔ ∀ ∃ ∈ ∑ ∫ √ ∞",
    "UPPERCASE lowercase MiXeD",
    "supercalifragilisticexpialidocious",
    "a" * 100,
    "ab" * 60,
    "The " * 30,
    "日本" * 40,
    "😀" * 20,
]


_POOLS: dict[str, str] = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digit": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "space": " \t\n\r",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会",
    "kana": "あいうえおかきくけこアイウエオカキクケコ",
    "hangul": "가나다라마바사아자차카타파하",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "hindi": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह्ािीुूेैोौं",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщъыьэюя",
    "emoji": "😀😂🥲😍🤔👍👎🙏🔥✨🎉💯❤🌍🚀",
    "modifier": "\u200d\ufe0f\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u0327\u0331\u0361",
    "control": "\x00\x01\x07\x08\x0b\x0c\x1b\x7f\x85",
    "rare": "\U00020000\U00020bb7\U0002a700\ue000\uf8ff\U000f0001\U0001f9ff\u0e3f",
}


def _random_string(rng: random.Random) -> str:
    pools = rng.sample(sorted(_POOLS), k=rng.randint(1, 4))
    out: list[str] = []
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.05:
            out.append(rng.choice(CONTROL_TEXT))
        elif r < 0.15:
            out.append(rng.choice(" \t\n") * rng.randint(1, 12))
        elif r < 0.2:
            out.append(rng.choice(["<b>", "</b>", "<td>", "<h1>", "<start_of_image>"]))
        else:
            pool = _POOLS[rng.choice(pools)]
            out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
    return "".join(out)


def random_strings(n: int = 160, seed: int = 20240601) -> list[str]:
    """``n`` seeded random mixes of scripts, emoji, whitespace runs and control-token text."""
    rng = random.Random(seed)
    return [_random_string(rng) for _ in range(n)]


def whitespace_strings() -> list[str]:
    """Every run of 1..31 spaces, tabs and newlines, bare and between words."""
    out = []
    for ch in " \t\n":
        for k in (1, 2, 3, 5, 8, 13, 16, 21, 30, 31):
            out.append(ch * k)
            out.append("w" + ch * k + "w")
    return out


def corpus() -> list[str]:
    """All test strings, deduplicated, in a fixed order."""
    seen: dict[str, None] = {}
    for s in HANDWRITTEN + whitespace_strings() + random_strings():
        if " " * 32 not in s:
            seen.setdefault(s, None)
    return list(seen)
