"""PERSON and STREET_ADDRESS by cue rules in Arabic and Devanagari (Hindi) script.

Neither script has letter case, so a name is the one to three words after a cue: a title or
honorific (السيد, السيدة, الدكتور...; श्री, श्रीमती, डॉ...), a self-introduction (اسمي, मेरा नाम), a
greeting (عزيزي, प्रिय) or a `name:` field (الاسم:, नाम:), stopping at a function word
(في, من, है, से...). An address starts at a street, district or house word (شارع, حي, ص.ب;
मकान, गली, सेक्टर...) and ends at its last number (building number or postcode) within the
same line. Used by `pii_names` and `pii_address`; no model, no extra package.
"""

from __future__ import annotations

import re

_AR_WORD = r"[\u0621-\u064a\u0671-\u06d3\u064b-\u0652]+"
_AR_CUE = (
    r"(?<![\u0621-\u064a])(?:السيد|السيدة|الآنسة|الأستاذ|الأستاذة|الاستاذ|الاستاذة|الدكتور|الدكتورة|د\.|المهندس"
    r"|المهندسة|الشيخ|الأخ|الأخت|عزيزي|عزيزتي|اسمي|الاسم|الإسم|اسم العميل|المرسل"
    r"|المستلم|مع تحيات|تحيات|مقدم الطلب)"
)
_AR_STOP = frozenset(
    "في من إلى الى على عن مع هو هي أنا انا نرجو يرجى رقم هاتف هاتفي جوال بريد عنوان العنوان "
    "وقد قد لقد الذي التي هذا هذه كان كانت سوف تم يتم شكرا و أو ثم بعد قبل عند".split()
)
_AR_NAME = re.compile(
    rf"{_AR_CUE}(?![\u0621-\u064a])[ \t]*[:：]?[ \t]*"
    rf"(?P<name>{_AR_WORD}(?:[ \t]+{_AR_WORD}){{0,3}})"
)

_DEV_WORD = r"[\u0900-\u0963\u0966-\u097f]+"  # Devanagari letters and signs, not the danda
_DEV_CUE = (
    r"(?:श्रीमती|श्री|सुश्री|कुमारी|डॉ\.?|डा\.|प्रिय|आदरणीय|मेरा नाम|नाम|ग्राहक का नाम|भवदीय|प्रेषक"
    r"|प्राप्तकर्ता)"
)
_DEV_STOP = frozenset(
    "है हैं हूँ हूं था थी थे जी से को का की के ने और में पर भी तो यह वह आप हम मैं मेरा मेरी "
    "नाम फ़ोन फोन नंबर मोबाइल पता ईमेल कृपया धन्यवाद साथ लिए".split()
)
_DEV_NAME = re.compile(
    rf"(?<![\u0900-\u097f]){_DEV_CUE}(?![\u0900-\u097f])[ \t]*[:：]?[ \t]*"
    rf"(?P<name>{_DEV_WORD}(?:[ \t]+{_DEV_WORD}){{0,2}})"
)


def _first_words(start: int, span: str, stop: frozenset[str], most: int):
    """(start, end) of the leading words of `span` before a function word (at most `most`)."""
    words, end = 0, start
    for m in re.finditer(r"\S+", span):
        raw = m.group()
        word = raw.rstrip("،,.:;!?؟।")
        if not word or word in stop or words == most:
            break
        words, end = words + 1, start + m.start() + len(word)
        if word != raw:
            break  # punctuation ends the name
    return (start, end) if words else None


def script_names(text: str) -> list[tuple[int, int]]:
    """Arabic- and Devanagari-script names after a cue, as (start, end) offsets."""
    out = []
    if re.search(r"[\u0621-\u064a]", text):
        for m in _AR_NAME.finditer(text):
            hit = _first_words(m.start("name"), m.group("name"), _AR_STOP, 3)
            out += [hit] if hit else []
    if re.search(r"[\u0900-\u097f]", text):
        for m in _DEV_NAME.finditer(text):
            hit = _first_words(m.start("name"), m.group("name"), _DEV_STOP, 3)
            out += [hit] if hit else []
    return out


_AR_ADDRESS = re.compile(
    r"(?:شارع|طريق|حي|ص\.[ \t]?ب\.?|صندوق بريد|مبنى|عمارة|فيلا|شقة)[ \t]"
    r"[\u0600-\u06ff\d\u0660-\u0669 \t،,.\-/]{2,120}"
)
_DEV_ADDRESS = re.compile(
    r"(?:मकान|फ़्लैट|फ्लैट|प्लॉट|हाउस|भवन|गली|सेक्टर|मोहल्ला|ग्राम|पोस्ट)[ \t]"
    r"[\u0900-\u0963\u0966-\u097f\d \t,.\-/]{2,120}"
)


def script_addresses(text: str) -> list[tuple[int, int]]:
    """Arabic- and Devanagari-script addresses: from a street/house word to the last number."""
    out = []
    for pattern, probe in ((_AR_ADDRESS, r"[\u0621-\u064a]"), (_DEV_ADDRESS, r"[\u0900-\u097f]")):
        if not re.search(probe, text):
            continue
        for m in pattern.finditer(text):
            digits = list(re.finditer(r"\d+", m.group()))
            if digits:
                out.append((m.start(), m.start() + digits[-1].end()))
    return out
