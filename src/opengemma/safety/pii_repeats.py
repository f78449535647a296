"""PERSON where a name found once is written again: "Agent (Kayla):" once found, each later
"Kayla"; "Ms. Danielle Okafor", then "Okafor" alone. Runs after the PERSON detectors, on what
they found (`Scanner.scan`)."""

from __future__ import annotations

import re

from opengemma.safety.pii_base import Finding
from opengemma.safety.pii_names import ARTICLES, PARTICLE, has_common_word

_CJK = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7a3]")


def repeated_names(text: str, found: list[Finding]) -> list[Finding]:
    """The other places where a name found in `text` is written again: "Agent (Kayla):" once
    found, each later "Kayla"; "Ms. Danielle Okafor", then "Okafor". The words of a Latin-script
    name count alone (three letters or more, not a common word or particle); a CJK name counts
    as a whole (two characters or more). Only unclaimed text is added."""
    names = {text[f.start : f.end] for f in found if f.type == "PERSON"}
    if not names:
        return []
    parts: set[str] = set()
    for name in names:
        if _CJK.search(name):
            parts.update([name] if len(name) >= 2 else [])
            continue
        parts.update(
            w
            for w in [name, *name.split()]
            if len(w) >= 3
            and w[0].isupper()
            and not has_common_word(w)
            and w.lower() not in ARTICLES
            and not re.fullmatch(PARTICLE, w.lower())
        )
    taken = [(f.start, f.end) for f in found]
    out = []
    for part in sorted(parts, key=len, reverse=True):
        bounded = not _CJK.search(part)  # Latin words end at a non-word character
        start = text.find(part)
        while start >= 0:
            end = start + len(part)
            if (
                not (bounded and (_word_char(text, start - 1) or _word_char(text, end)))
                and all(end <= s or start >= e for s, e in taken)
                and not _firm(text, end)
            ):
                out.append(Finding(start, end, "PERSON", 0.6, "name-repeats"))
                taken.append((start, end))
            start = text.find(part, end)
    return out


def _word_char(text: str, i: int) -> bool:
    return 0 <= i < len(text) and (text[i].isalnum() or text[i] in "_'’-")


_FIRM_AFTER = re.compile(r"[ \t]*(?:&|\+|-GmbH|[ \t](?:und|and|et|e|y)[ \t]+[A-Z])")


def _firm(text: str, end: int) -> bool:
    """The name written at `end` goes on as a firm's name: "Moreau & Associés", "Albright
    Woodworks", "Marsh Family Dental" (a common word or `&` follows)."""
    if _FIRM_AFTER.match(text, end):
        return True
    nxt = text[end : end + 30].split(None, 1)
    return bool(nxt) and text[end : end + 1] == " " and has_common_word(nxt[0])
