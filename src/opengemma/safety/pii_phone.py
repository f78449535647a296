"""Phone numbers in every written form, checked by Google's `phonenumbers`.

Forms: `+CC ...`, the international call prefixes `00 CC ...` and `011 CC ...` (North America),
national numbers with a trunk prefix (`030 ...`, `06-...`, `(0)` inside an international
number), and any of space, dot, hyphen, slash and parentheses as separators. A candidate is a
phone when `phonenumbers` says so:

- *valid* (an assigned range) in one of the regions, when nothing around it says "phone";
- *possible* (a plausible length for the country), when the text says it is a phone (field
  name, a context word in one of the major languages, a table header) or the shape is
  unambiguous (an explicit `+` / `00` / `011` international prefix followed by a grouped
  number).

Rejected by shape: dates, times, ISBNs, year-prefixed ids (`2024-000123`), postcodes
(`96620-2820`, `01310-200`), amounts (a currency sign or decimal comma next to it), and bare
digit runs (timestamps, order numbers) without phone context; rejected by context: order,
invoice, customer, tracking ... numbers in the same languages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from opengemma.safety.pii_base import Finding, RuleDetector, before

DEFAULT_PHONE_REGIONS = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "PT", "BR", "IN", "CA", "AU", "JP", "CN", "KR",
    "BE", "AT", "CH", "MX", "IE",
)  # fmt: skip

# The look-ahead names the characters a candidate starts with, so that Python's `re` skips to
# them instead of trying the look-behinds at every position (same matches, twice as fast).
_CANDIDATE = re.compile(
    r"(?=[+(\d])(?<![A-Za-z0-9.+/_#-])(?<![\d:=][:=])(?<!\d,)"
    r"(?:\+[ \t]?)?\(?\d[\d \t().\-/]{5,22}\d"
    r"(?:[ \t]*(?:x|ext\.?|#)[ \t]*\d{1,6})?(?![A-Za-z0-9]|[-/.:]\d|\.[A-Za-z])"
)
_NEGATIVE = re.compile(
    r"(?i)(?:#|n[°º]|\b(?:order|invoice|inv|ticket|case|ref|reference|tracking|account|acct|id"
    r"|sku|po|build|version|ver|serial|isbn|ean|gtin|no\.|(?-i:No|NO)|number|nr\.?|art(?:ikel)?"
    r"|bestell\w*|auftrag\w*|rechnung\w*|kunden\w*|vertrag\w*|factur\w*|commande|pedido"
    r"|ordine|ordem|nota fiscal|codice|código|code|ordernummer|factuur|referentie|kenmerk"
    r"|ts|timestamp|time|epoch|pid|uid|session|siren|siret|nif|nie|dni|cpf|cnpj|vat|tax|btw|kvk"
    r"|ust-?id\w*|steuer\w*|iva|partita|fiscal\w*|matr[íi]cula|imei|iccid|lot|batch|charge"
    r"|seriennummer|licen[cs]e|kennzeichen|plate|pin|otp|tan|iban|bic|konto\w*|cuenta|conto"
    r"|rekening\w*|contrato|sepa|mandat\w*|pesel|nip|regon|personnummer|kimlik|tckn|aadhaa?r"
    r"|pan|nik|hetu|nipc|nipc|referência|referencia|riferimento|client|klant|kontrakt|bankgiro"
    r"|plusgiro|ocr|tva(?: intracommunautaire)?|código postal|postal|postcode|plz|zip"
    r"|registration|reg|company|utr|gst(?:in)?)\W{0,5}"
    r"|注文番号\W?|订单号\W?|주문번호\W?|〒|사업자(?:등록)?번호\W?|등록번호\W?|승인번호\W?|法人番号\W?"
    r"|会員番号\W?|口座番号\W?|税号\W?|账号\W?|卡号\W?|رقم الحساب\W?|الحساب رقم\W?)"
    r"(?:[ \t]+(?-i:[A-Z]{2}))?[ \t]*$"  # "VAT GB 812 4471 09", "USt-IdNr. DE 149 221 835"
)
# "Phone number:", "Tel. Nr.", "Mobile no." -- a phone word just before the number word.
_PHONE_NUMBER_WORD = re.compile(
    r"(?i)(?:phone|tel\.?|mobile|cell|fax|telefon|handy|mobil|téléphone|teléfono|telefono"
    r"|telefone|celular|gsm)[ \t]*(?:number|no\.?|nr\.?|nummer|n[°º]\.?|#)\W{0,5}$"
)
_CONTEXT = re.compile(
    r"(?i)(?:phone|tel\b|tel\.|call|mobile|cell|fax|whats ?app|\bzap\b|sms|text me|contact"
    r"|reach|dial|\bring\b|landline|hotline|telefon|teléfono|telefono|telefone|téléphone|tél"
    r"|portable|móvil|movil|celular|cellulare|handy|\bmobil|rufnummer|\bbel\b|bellen|chiam"
    r"|appel|llam|\blig(?:ar|a|ue)\b|contatt|contact|fixo|\bgsm\b|電話|携帯|手机|电话|致电|联系|전화|휴대폰"
    r"|연락|☎|📞|komórk|\bkom\.|zadzwo|numer telefonu|telefonnummer|(?-i:Cep|cep)\b|\bara\b"
    r"|arayın|numaram|फ़ोन|फोन|मोबाइल|संपर्क|नंबर|कॉल|هاتف|جوال|موبايل|اتصل|الاتصال|تلفون|واتساب)"
)
_SHAPE_REJECT = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{2}|\d{4})"  # dates
    r"|(?:19|20)\d\d[-/]\d{2,}(?:[-/]\d+)*"  # 2024-000123, 2023-0045-117
    r"|\d{5}-\d{3,4}"  # BR CEP, US ZIP+4
    r"|97[89][- ]?\d{1,5}[- ]\d{1,7}[- ]\d{1,7}[- ]\d"  # ISBN-13
    r"|\d{1,5}[- ]\d{1,7}[- ]\d{1,7}[- ][\dX]"  # ISBN-10
    r"|\d{1,3}(?:\.\d{3})+(?:,\d\d)?|\d{1,3}(?:,\d{3})+(?:\.\d\d)?"  # amounts
    r"|\d{3}\.\d{3}\.\d{3}"  # nota fiscal 000.123.456
    r"|[1-9]\d{0,2}\.\d{4,}"  # decimal fractions, coordinates 40.712776
    r"|[1-9]\d{0,2}(?:\.\d{1,3}){3,}"  # IPv4 addresses and OIDs (phones in dots start with 0)
    r")$"
    r"|^\d{1,3}\.\d{1,3}\.\d{1,3}[ \t]*\("  # a version and its date: "4.2.0 (2026-11-18"
    r"|\d{5}\.\d{5}"  # boleto and other bank lines: 42000.06330
    r"|^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})[ \tT]"  # date + time
)
_POSTCODE_CITY = re.compile(r"\d{4}-\d{3}")  # PT postcode, when a city name follows
_CITY_AFTER = re.compile(r"[ \t]+[A-ZÀ-Þ][a-zà-ÿ]")
_TWO_NUMBERS = re.compile(r"[ \t]*/[ \t]*")  # "912 345 678 / 21 345 6789"
# Without phone context: decimal numbers (0.999999999, 22026.4658) and year ranges (1725-2073,
# pp. 854-1987). With or without: a slash joins an area code to its number (`089 / 12 34 56`),
# never decimals or three numbers (`0.89 / 2.21 / 2.93`, `640 / 1152`, table cells).
_CODE_BEFORE = re.compile(r"(?<![\w-])(?=[A-Z]*\d)(?=\d*[A-Z])[A-Z\d]{2,}[ \t]$")
_DECIMAL = re.compile(r"\+?\d+\.\d+")
_YEAR_RANGE = re.compile(r"(?:(?:1[5-9]|20)\d\d|\d{1,3})[ \t]?[-–][ \t]?(?:1[5-9]|20)\d\d")
_AREA_CODE = re.compile(r"[ \t]*(?:\(?0|\+)[\d \t()-]*")
_MONEY = re.compile(r"[$€£¥₹₩]|R\$|\b(?:EUR|USD|GBP|CHF|BRL|JPY|CNY|KRW)\b")


_LETTER_HINTS = (  # letters one language writes -> regions tried first
    (re.compile(r"[\u0600-\u06ff]"), ("SA", "AE", "EG", "MA", "JO", "KW", "QA", "IQ", "LB")),
    (re.compile(r"[\u0900-\u097f]"), ("IN",)),
    (re.compile(r"[ąćęłńśźżĄĆĘŁŃŚŹŻ]"), ("PL",)),
    (re.compile(r"[ğışİĞŞ]"), ("TR",)),
    (re.compile(r"[åÅ]"), ("SE", "NO", "DK", "FI")),
)
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_EXTENSION = re.compile(r"x|ext|#")


def _script_regions(text: str) -> tuple[str, ...]:
    """Regions the script of the text suggests (tried first for national numbers)."""
    if _KANA.search(text):
        return ("JP",)
    if _HANGUL.search(text):
        return ("KR",)
    if _HAN.search(text):
        return ("CN", "TW", "HK", "JP")
    return tuple(r for pattern, regions in _LETTER_HINTS if pattern.search(text) for r in regions)


def _candidates(text: str) -> Iterator[tuple[int, str]]:
    """(offset, candidate) pairs; a whole number before a slash is a candidate of its own (two
    numbers joined by a slash), while an area code before one (`089 / 12 34 56 78`) is not."""
    pos = 0
    while m := _CANDIDATE.search(text, pos):
        cand, start = m.group().rstrip(" \t.-/("), m.start()
        pos = m.end()
        parts = _TWO_NUMBERS.split(cand)
        if len(parts) > 1 and sum(c.isdigit() for c in parts[0]) >= 7:
            cand = parts[0]
            pos = start + len(cand) + len(_TWO_NUMBERS.match(text, start + len(cand)).group())
        if cand.startswith("(") and ")" not in cand:
            cand, start = cand[1:], start + 1
        yield start, cand


def _one_number(cand: str) -> bool:
    """No range (`0..262143`) and, when a slash is in it, an area code and a number."""
    if ".." in cand:
        return False
    if "/" not in cand:
        return True
    parts = _TWO_NUMBERS.split(cand)
    return len(parts) == 2 and bool(_AREA_CODE.fullmatch(parts[0])) and "." not in parts[1]


def _ambiguous(cand: str, digits: int) -> bool:
    """Shapes that are phones only where the text says so: national numbers of 7 digits or
    fewer, decimals, year ranges, `+` then a space (a sum); bare digit runs are handled apart
    (`00` / `011` before them is an international prefix)."""
    international = cand.startswith(("+", "00", "011"))
    if cand.isdigit():
        return not international
    return (
        (digits <= 7 and not international)
        or cand[1:2] in (" ", "\t")
        and cand[0] == "+"
        or bool(_DECIMAL.fullmatch(cand) or _YEAR_RANGE.fullmatch(cand))
    )


class PhoneDetector(RuleDetector):
    """International and national phone numbers (see the module docstring)."""

    name, types = "phonenumbers", frozenset({"PHONE"})

    def __init__(self, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> None:
        import phonenumbers

        self._pn = phonenumbers
        self.regions = tuple(regions)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"regions": list(self.regions)}

    def find(self, text: str, field: str) -> list[Finding]:
        out: list[Finding] = []
        hint: tuple[str, ...] | None = None
        for start, cand in _candidates(text):
            digits = sum(c.isdigit() for c in cand)
            if not 7 <= digits <= 15 + 6 * bool(_EXTENSION.search(cand)):
                continue
            if _SHAPE_REJECT.search(cand) or self._money(text, start, start + len(cand)):
                continue
            if _POSTCODE_CITY.fullmatch(cand) and _CITY_AFTER.match(text, start + len(cand)):
                continue
            if not _one_number(cand):
                continue
            ctx = before(text, start, 28)
            if _NEGATIVE.search(ctx) and not _PHONE_NUMBER_WORD.search(ctx):
                continue
            says = self._says_phone(text, field, start)
            if not says and _CODE_BEFORE.search(ctx):
                continue  # the tail of a tracking or reference code: "1Z 999 AA1 01 2345 6784"
            if not says and _ambiguous(cand, digits):
                continue  # a bare digit run, a short or decimal number: only if something says so
            if hint is None:
                hint = _script_regions(text)
            if self._is_phone(cand, says, hint):
                out.append(self._hit(start, start + len(cand), 0.9 if says else 0.85))
        return out

    @staticmethod
    def _money(text: str, start: int, end: int) -> bool:
        return bool(_MONEY.search(text[max(0, start - 4) : start] + " " + text[end : end + 5]))

    def _says_phone(self, text: str, field: str, start: int) -> bool:
        """Phone context: the field name, the 48 characters before, or a table header."""
        header = text[: text.find("\n")] if "\n" in text[:start] else ""
        return bool(_CONTEXT.search(f"{field} {header} {before(text, start, 48)}"))

    def _is_phone(self, cand: str, says: bool, hint: tuple[str, ...]) -> bool:
        """International readings first (`+`, `00`, `011`), then national ones per region."""
        grouped = not cand.replace("+", "").isdigit()
        readings: list[tuple[str, str | None]] = []
        if cand.startswith("+"):
            readings.append((cand, None))
        elif cand.startswith("00") and not cand.startswith("000"):
            readings.append(("+" + cand[2:], None))
        elif cand.startswith("011"):
            readings.append(("+" + cand[3:], None))
        if not cand.startswith("+"):
            readings += [(cand, r) for r in dict.fromkeys(hint + self.regions)]
        pn = self._pn
        for number, region in readings:
            try:
                parsed = pn.parse(number, region)
            except pn.NumberParseException:
                continue
            if pn.is_valid_number(parsed):
                return True
            lenient = says or (region is None and grouped)
            if lenient and pn.is_possible_number(parsed):
                return True
        return False
