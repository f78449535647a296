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
    r"|المهندسة|الشيخ|الأخ|الأخت|عزيزي|عزيزتي|اسمي|الاسم الكامل|الاسم بالكامل|الاسم|الإسم"
    r"|اسم العميل|اسم الموظف|اسم المريض|المرسل|المستلم|مع تحيات|تحيات|مقدم الطلب|مدير العلاقة"
    r"|مديرة العلاقة|المدير|المديرة|الموظف|الموظفة|المريض|المريضة|العميل|العميلة|المسؤول"
    r"|المسؤولة|المحامي|المحامية)"
)
# Common Arabic given names: one followed by a family or father's name ("نورة القحطاني",
# "محمد بن سلمان") is a name wherever it stands.
_AR_GIVEN = frozenset(
    "محمد أحمد علي عمر خالد يوسف إبراهيم ابراهيم عبدالله عبد الله عبدالرحمن عبدالعزيز سلمان فهد "
    "فيصل سعود سعد ناصر سلطان تركي بندر ماجد حمد حمدان راشد سعيد مصطفى محمود حسن حسين طارق "
    "كريم زياد وليد هشام عادل سامي رامي باسل نبيل جمال كمال منصور مراد يزيد أنس معاذ بلال "
    "حمزة إسماعيل اسماعيل موسى عيسى هاني ياسر عمرو شريف أيمن ايمن مازن نايف مشعل عثمان "
    "فاطمة عائشة مريم نورة نوره سارة ساره ليلى هند ريم لمى دانة جود رهف رنا رانيا هدى منى "
    "سلمى أمل امل نور نورا ياسمين زينب خديجة آمنة أسماء اسماء حنان سعاد لطيفة شيماء دعاء "
    "إيمان ايمان هالة رشا سمر غادة عبير وفاء منيرة العنود الجوهرة لينا ديما تالا جنى".split()
)
_AR_FAMILY = re.compile(r"(?:ال|آل |بن |بنت |ابن |أبو |ابو |عبد)[\u0621-\u064a]+")
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
# Common Indian surnames in Devanagari: a word before one is a given name ("प्रिया शर्मा").
_DEV_SURNAMES = frozenset(
    "शर्मा वर्मा गुप्ता सिंह कुमार कुमारी पटेल यादव जैन अग्रवाल मिश्रा मिश्र तिवारी पांडे पाण्डेय पांडेय "
    "चौहान राठौर मेहता शाह जोशी रेड्डी नायर मेनन अय्यर राव खान चौधरी ठाकुर श्रीवास्तव सक्सेना भट्ट "
    "देसाई कपूर मल्होत्रा खन्ना बंसल गोयल मित्तल सेठी दास बनर्जी मुखर्जी चटर्जी घोष बोस सेन दत्त "
    "त्रिपाठी दुबे द्विवेदी चतुर्वेदी शुक्ला सिन्हा प्रसाद नारायण पाठक गिल सेठ बत्रा अरोड़ा अहमद".split()
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
    """Arabic- and Devanagari-script names after a cue or by lexicon, as (start, end)."""
    out = []
    if re.search(r"[\u0621-\u064a]", text):
        for m in _AR_NAME.finditer(text):
            hit = _first_words(m.start("name"), m.group("name"), _AR_STOP, 3)
            out += [hit] if hit else []
        out += _lexicon_names(text, _AR_WORD, _AR_STOP, _arabic_pair)
    if re.search(r"[\u0900-\u097f]", text):
        for m in _DEV_NAME.finditer(text):
            hit = _first_words(m.start("name"), m.group("name"), _DEV_STOP, 3)
            out += [hit] if hit else []
        out += _lexicon_names(text, _DEV_WORD, _DEV_STOP, _devanagari_pair)
    if re.search(r"[\u0400-\u04ff]", text):
        out += cyrillic_names(text)
    return out


_AR_CONNECT = frozenset("بن بنت ابن أبو ابو".split())  # "son of", "father of": a word follows


# Cyrillic (Russian, Ukrainian): a patronymic (-ович, -евна, -ична... in any case ending) with
# the given name before it and the surname before or after; initials with a surname; or a
# name after a title, a form field or a closing.
_CY = r"[А-ЯЁІЇЄҐ][а-яёіїєґ'’-]+"
_CY_PATRONYMIC = (
    r"[А-ЯЁІЇЄҐ][а-яёіїєґ]+(?:ович|евич|йович|ьич|овн|евн|ічн|ичн|інічн|иничн)[а-яёіїєґ]{0,3}"
)
_CY_SURNAME = (  # surname endings (-ов, -ин, -ский, -енко, -ук...) with any case ending
    r"[А-ЯЁІЇЄҐ][а-яёіїєґ'’-]*(?:ов|ев|ёв|ин|ын|ск|цк|ко|ук|юк|ич|ян|дзе|швили|ых|их)[а-яёіїєґ]{0,3}"
)
_S, _I = r"[ \u00a0]", r"[А-ЯЁІЇЄҐ]\."
# In order of preference: given + patronymic + surname, surname + given + patronymic, given +
# patronymic, surname + initials, initials + surname.
_CY_FORMS = tuple(
    re.compile(rf"(?<![\w]){form}(?![\w])")
    for form in (
        rf"{_CY}{_S}{_CY_PATRONYMIC}{_S}{_CY}",
        rf"{_CY_SURNAME}{_S}{_CY}{_S}{_CY_PATRONYMIC}",
        rf"{_CY}{_S}{_CY_PATRONYMIC}",
        rf"{_CY}{_S}{_I}[ \u00a0]?{_I}",
        rf"{_I}[ \u00a0]?{_I}[ \u00a0]?{_CY}",
    )
)
_CY_CUE = re.compile(
    r"(?:(?<![\w])(?:г-н|г-жа|[Гг]осподин|[Гг]оспожа|[Уу]важаем(?:ый|ая|ые)|[Шш]ановн(?:ий|а)"
    r"|[Пп]ан|[Пп]ані|ФИО|Ф\.И\.О\.|ПІБ|Имя|Фамилия|Ім'я|Прізвище|Получатель|Отправитель|Клиент"
    r"|Отримувач|Контактное лицо|Менеджер|Пациент|Директор|С уважением|З повагою"
    r"|Здравствуйте|Добрый день|Привет|Вітаю|Добрий день),?[ \t]*[:：]?[ \t]*(?:\n[ \t]*)?)"
    rf"(?P<name>{_CY}(?:[ \u00a0]{_CY}){{0,2}})"
)
_CY_STOP = frozenset(
    "По Для Это Мы Вы Они Заказ Договор Адрес Телефон Дата Москва Спасибо Компания Отдел".split()
)


def cyrillic_names(text: str) -> list[tuple[int, int]]:
    """Russian and Ukrainian names: patronymic forms, initials, or after a cue."""
    out: list[tuple[int, int]] = []
    for form in _CY_FORMS:
        out += [
            (m.start(), m.end())
            for m in form.finditer(text)
            if all(m.end() <= s or m.start() >= e for s, e in out)
        ]
    for m in _CY_CUE.finditer(text):
        words = m.group("name").split()
        keep = []
        for w in words:
            if w in _CY_STOP:
                break
            keep.append(w)
        if keep:
            start = m.start("name")
            out.append((start, start + len(" ".join(keep))))
    return out


def _arabic_pair(first: str, second: str) -> bool:
    known = first in _AR_GIVEN or first in _AR_CONNECT
    return known and bool(
        _AR_FAMILY.fullmatch(second) or second in _AR_GIVEN or second in _AR_CONNECT
    )


def _devanagari_pair(first: str, second: str) -> bool:
    return second in _DEV_SURNAMES and first not in _DEV_SURNAMES


def _lexicon_names(text: str, word: str, stop: frozenset[str], pair) -> list[tuple[int, int]]:
    """Two or three words of a script where the first two make a name by `pair` (a known
    given name and a family name); a third word joins when it is a family name too."""
    words = [m for m in re.finditer(word, text) if m.group() not in stop]
    out, i = [], 0
    while i + 1 < len(words):
        a, b = words[i], words[i + 1]
        if text[a.end() : b.start()] in (" ", "\u00a0") and pair(a.group(), b.group()):
            end, i = b.end(), i + 2
            if i < len(words) and text[end : words[i].start()] == " ":
                if pair(a.group(), words[i].group()) or b.group() in _AR_CONNECT:
                    end, i = words[i].end(), i + 1
            out.append((a.start(), end))
        else:
            i += 1
    return out


_AR_ADDRESS = re.compile(
    r"(?:شارع|طريق|حي|ص\.[ \t]?ب\.?|صندوق بريد|مبنى|عمارة|فيلا|شقة)[ \t]"
    r"[\u0600-\u06ff\d\u0660-\u0669 \t،,.\-/]{2,120}"
)
_DEV_ADDRESS = re.compile(
    r"(?:मकान|फ़्लैट|फ्लैट|प्लॉट|हाउस|भवन|गली|सेक्टर|मोहल्ला|ग्राम|पोस्ट)[ \t]"
    r"[\u0900-\u0963\u0966-\u097f\d \t,.\-/]{2,120}"
)


# Russian / Ukrainian: an optional index and city, a street word and name, then the house
# (д./буд.) with building, flat or office parts, and an optional city and 6-digit index after.
_CY_CITY = (
    r"(?:г\.|город|м\.|пос\.|с\.|пгт)[ \t]?[А-ЯЁІЇЄҐ][а-яёіїєґ-]+(?:[ \t-][А-ЯЁІЇЄҐ][а-яёіїєґ-]+)?"
)
_CY_STREET_WORD = (
    r"(?:ул\.|улица|вул\.|вулиця|пр-т|пр\.|просп\.|проспект|пер\.|переулок|провулок|наб\."
    r"|набережная|ш\.|шоссе|б-р|бульвар|пл\.|площадь|площа|проезд|мкр\.?|микрорайон)"
)
_CY_STREET_WORDS = r"[А-ЯЁІЇЄҐ0-9][а-яёіїєґА-ЯЁІЇЄҐ0-9-]*\.?"
_CY_STREET_NAME = rf"{_CY_STREET_WORDS}(?:[ \t]{_CY_STREET_WORDS}){{0,3}}"
_CY_ADDRESS = re.compile(
    rf"(?:\d{{6}},[ \t]*)?(?:{_CY_CITY},[ \t]*)?"
    rf"(?:{_CY_STREET_WORD}[ \t]?{_CY_STREET_NAME}|{_CY_STREET_NAME}[ \t]{_CY_STREET_WORD})"
    r",?[ \t]*(?:д\.|дом|буд\.|будинок)[ \t]?\d{1,5}[а-яА-Я]?(?:/\d{1,4})?"
    r"(?:,?[ \t]*(?:корп\.|к\.|стр\.|строение|кв\.|квартира|оф\.|офис|пом\.)[ \t]?\d{1,5}[а-я]?)*"
    rf"(?:,[ \t]*{_CY_CITY})?(?:,[ \t]*\d{{6}})?"
)
# Vietnamese: a house number and street, then ward, district and city parts (no postcode).
_VI_PART = r"[^\W\d_][^\W_]*(?:[ \t][^\W_]+){0,4}"
_VI_ADDRESS = re.compile(
    r"(?:(?:Số|số)[ \t])?\d{1,4}[A-Za-z]?(?:/\d{1,4})*[ \t]+"
    r"(?:(?:đường|phố|Đường|Phố|ngõ|hẻm)[ \t]+)?"
    rf"{_VI_PART}(?:,[ \t]*(?:Phường|P\.|Quận|Q\.|Huyện|Xã|Thị trấn|Thị xã|Tỉnh|TP\.?|Thành phố)"
    rf"[ \t]*(?:\d{{1,2}}\b|{_VI_PART}))+(?:,[ \t]*(?:Hà Nội|Đà Nẵng|Hải Phòng|Cần Thơ|Huế))?"
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
    if re.search(r"[\u0400-\u04ff]", text):
        out += [(m.start(), m.end()) for m in _CY_ADDRESS.finditer(text)]
    if re.search(r"(?:Phường|Quận|Huyện|Xã|Tỉnh|TP\.|Thành phố)", text):
        out += [(m.start(), m.end()) for m in _VI_ADDRESS.finditer(text)]
    return out
