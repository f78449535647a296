"""Structured identifiers: e-mail, payment card, IBAN, US SSN, IP address, date of birth.

Each detector validates what its expression matches (Luhn, mod-97, SSN ranges, `ipaddress`,
`phonenumbers`) and uses the surrounding words to accept or reject ambiguous numbers.
"""

from __future__ import annotations

import ipaddress
import re

from opengemma.safety.pii_base import HAS_DIGIT, Finding, RuleDetector, before, finditer_at

# Expressions that would start with a look-behind start with their first character instead and
# look behind it (`\d(?<![\w-]\d)` for `(?<![\w-])\d`): the same matches, and Python's `re`
# then skips to candidate characters instead of trying the look-behind at every position.


def luhn_ok(digits: str) -> bool:
    """True when a digit string passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class EmailDetector(RuleDetector):
    name, types = "email", frozenset({"EMAIL"})
    _L = "A-Za-z0-9À-ÖØ-öø-ÿ\u0100-\u017f"  # Latin letters: müller@beispiel.de
    _re = re.compile(
        rf"(?<![{_L}_.%+-])[{_L}][{_L}._%+-]{{0,63}}@"
        rf"(?:[{_L}](?:[{_L}-]{{0,61}}[{_L}])?\.)+[A-Za-z]{{2,24}}(?![{_L}_-])"
    )
    _ssh_remote = re.compile(r":[\w~.-]*/")  # git@github.com:org/repo.git is no mailbox
    # anna.schmidt(at)firma.de / jan [at] example [dot] org
    _obfuscated = re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9][\w.%+-]{0,63}[ \t]?[\[(]at[\])][ \t]?"
        r"(?:[A-Za-z0-9-]+(?:[ \t]?[\[(]dot[\])][ \t]?|\.))+[A-Za-z]{2,24}\b"
    )

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        if "@" in text:
            out += [
                self._hit(m.start(), m.end(), 0.99)
                for m in self._re.finditer(text)
                if not self._ssh_remote.match(text, m.end())
                and not text.endswith("://", 0, m.start())  # https://key@host: a URL, not mail
            ]
        if "at)" in text or "at]" in text:
            out += [self._hit(m.start(), m.end(), 0.8) for m in self._obfuscated.finditer(text)]
        return out


class CreditCardDetector(RuleDetector):
    name, types = "credit-card", frozenset({"CREDIT_CARD"})
    _re = re.compile(r"\d(?<![\w+-]\d)(?:[ -]?\d){11,18}(?![\w])")  # "+49151..." is a phone

    @staticmethod
    def brand_ok(d: str) -> bool:
        """Issuer prefix and length plausible (Visa, Mastercard, Amex, Discover, JCB, ...)."""
        n, p2, p4 = len(d), int(d[:2]), int(d[:4])
        if d[0] == "4":
            return n in (13, 16, 19)
        if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
            return n == 16
        if p2 in (34, 37):
            return n == 15
        if p2 in (30, 36, 38, 39):
            return 14 <= n <= 19
        return d[0] in "3456" and 12 <= n <= 19  # Discover, JCB, UnionPay, Maestro

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            pos = [m.start() + i for i, c in enumerate(m.group()) if c.isdigit()]
            digits = "".join(text[p] for p in pos)
            for n in dict.fromkeys((len(digits), 16, 15, 14, 19, 13)):
                # a shorter card must end where a separator does (a number follows it)
                cut_ok = n == len(digits) or (n < len(digits) and text[pos[n - 1] + 1] in " -")
                if cut_ok and self.brand_ok(digits[:n]) and luhn_ok(digits[:n]):
                    out.append(self._hit(m.start(), pos[n - 1] + 1, 0.95))
                    break
        return out


IBAN_LENGTHS = dict(
    (c[:2], int(c[2:]))
    for c in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 "
        "DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 "
        "IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22 MK19 MR27 "
        "MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24 RS22 SA24 SC31 SE24 SI19 SK24 SM27 "
        "ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20"
    ).split()
)


def iban_ok(iban: str) -> bool:
    """Country length and ISO 13616 mod-97 check of a compact upper-case IBAN."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


class IbanDetector(RuleDetector):
    name, types = "iban", frozenset({"IBAN"})
    _re = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z]{2}|[a-z]{2})\d{2}(?:[ -]?[A-Za-z0-9]){11,30}")
    # Polish NRB: the PL IBAN without its country code (2 check digits + 24), same mod-97 check
    _nrb = re.compile(r"\d(?<![\w-]\d)\d(?:[ -]?\d{4}){6}(?![\w-])")
    # where a match can start: two check digits after two letters (`re` skips to digits, far
    # rarer than the letters `_re` begins with); `_re` is tried two characters before each
    _check_digits = re.compile(r"\d(?<=(?<![A-Za-z0-9])(?:[A-Z]{2}|[a-z]{2})\d)\d")

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        starts = (m.start() - 2 for m in self._check_digits.finditer(text))
        for m in finditer_at(self._re, text, starts):
            want = IBAN_LENGTHS.get(m.group()[:2].upper())
            pos = [m.start() + i for i, c in enumerate(m.group()) if c not in " -"]
            if want is None or len(pos) < want:
                continue
            end = pos[want - 1] + 1
            if end < len(text) and text[end].isalnum():
                continue
            if iban_ok("".join(text[p] for p in pos[:want]).upper()):
                out.append(self._hit(m.start(), end, 0.99))
        for m in self._nrb.finditer(text) if len(text) >= 26 else ():
            if iban_ok("PL" + re.sub(r"\D", "", m.group())):
                out.append(self._hit(m.start(), m.end(), 0.9))
        return out


class SsnDetector(RuleDetector):
    name, types = "us-ssn", frozenset({"US_SSN"})
    _re = re.compile(r"(\d(?<![\w-]\d)\d{2})([- ]?)(\d{2})\2(\d{4})(?![\w-])")
    _context = re.compile(r"(?i)\b(?:ssn|social security|soc\.? ?sec)")

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in self._re.finditer(text):
            area, sep, group, serial = int(m[1]), m[2], int(m[3]), int(m[4])
            if area == 0 or area == 666 or area >= 900 or group == 0 or serial == 0:
                continue
            if not sep and not self._context.search(field + " " + before(text, m.start(), 40)):
                continue  # nine bare digits are an SSN only when something says so
            out.append(self._hit(m.start(), m.end(), 0.9 if sep else 0.8))
        return out


class IpAddressDetector(RuleDetector):
    name, types = "ip-address", frozenset({"IP_ADDRESS"})
    _v4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)")
    _v6 = re.compile(
        r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
        r"(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])"
    )
    _version = re.compile(r"(?i)\b(?:version|ver\.?|release|build|v)\s*$")  # not "server"
    _HEX = frozenset("0123456789abcdefABCDEF")

    @classmethod
    def _v6_starts(cls, text: str) -> list[int]:
        """Where `_v6` can match: a colon, or the up to four hex digits right before one that
        follow no word character, colon or dot (the look-behind `_v6` begins with)."""
        starts, c = [], text.find(":")
        while c >= 0:
            s = c
            while s > 0 and c - s < 4 and text[s - 1] in cls._HEX:
                s -= 1
            if not starts or starts[-1] != s:
                starts.append(s)
            c = text.find(":", c + 1)
        return starts

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        if "." in text:
            for m in self._v4.finditer(text):
                if self._version.search(before(text, m.start(), 12)):
                    continue
                try:
                    ipaddress.IPv4Address(m.group())
                except ValueError:
                    continue
                out.append(self._hit(m.start(), m.end(), 0.95))
        if "::" in text or text.count(":") >= 7:
            for m in finditer_at(self._v6, text, self._v6_starts(text)):
                value = m.group()
                if sum(1 for g in re.split(r"[:.]", value) if g) < 2:
                    continue
                try:
                    ipaddress.IPv6Address(value)
                except ValueError:
                    continue
                out.append(self._hit(m.start(), m.end(), 0.95))
        return out


# ------------------------------------------------------------------- dates of birth

_MONTHS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_MONTHS_EU = (
    r"januar|jänner|februar|märz|mai|juni|juli|oktober|dezember|janvier|février|mars|avril"
    r"|juin|juillet|août|septembre|octobre|novembre|décembre|enero|febrero|marzo|abril|mayo"
    r"|junio|julio|agosto|septiembre|octubre|noviembre|diciembre|gennaio|febbraio|aprile"
    r"|maggio|giugno|luglio|settembre|ottobre|dicembre|janeiro|fevereiro|março|maio|junho"
    r"|julho|setembro|outubro|dezembro|januari|februari|maart|mei|augustus"
    r"|stycznia|lutego|marca|kwietnia|maja|czerwca|lipca|sierpnia|września|października"
    r"|listopada|grudnia|mars|maj|augusti|ocak|şubat|mart|nisan|mayıs|haziran|temmuz|ağustos"
    r"|eylül|ekim|kasım|aralık|जनवरी|फ़रवरी|फरवरी|मार्च|अप्रैल|मई|जून|जुलाई|अगस्त|सितंबर|सितम्बर"
    r"|अक्टूबर|नवंबर|नवम्बर|दिसंबर|दिसम्बर|يناير|فبراير|مارس|أبريل|إبريل|مايو|يونيو|يوليو|أغسطس"
    r"|سبتمبر|أكتوبر|نوفمبر|ديسمبر|января|февраля|марта|апреля|мая|июня|июля|августа|сентября"
    r"|октября|ноября|декабря|січня|лютого|березня|квітня|травня|червня|липня|серпня|вересня"
    r"|жовтня|листопада|грудня|januari|februari|maret|mei|agustus|desember|ledna|února|března"
    r"|dubna|května|června|července|srpna|září|října|listopadu|prosince|marts"
)
_DATE = re.compile(
    rf"(?i)(?<![\w/.:-])(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|\d{{1,2}}[-/.]\d{{1,2}}[-/.]\d{{2,4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th|\.)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    r"|\d{4}\s?年\s?\d{1,2}\s?月\s?\d{1,2}\s?日|\d{4}년\s?\d{1,2}월\s?\d{1,2}일"
    r"|ngày\s\d{1,2}\stháng\s\d{1,2}\snăm\s\d{4}"  # Vietnamese: ngày 5 tháng 9 năm 1991
    r"|(?:明治|大正|昭和|平成|令和)\s?(?:\d{1,2}|元)\s?年\s?\d{1,2}\s?月\s?\d{1,2}\s?日"  # 昭和33年
    rf"|\d{{1,2}}\.?\s+(?:de\s+)?(?:{_MONTHS_EU})\.?\s+(?:de\s+)?\d{{4}})(?![\w/:-]|\.\d)"
)
# Birth context words: those that must begin a word (`\b` before each), and the others.
_BIRTH_WORD_STARTS = (
    r"born\b", r"d\.?o\.?b\b", r"b-?day\b", r"geb\.", r"n[ée]e?\b", r"nat[oa]\b", r"f\. ?nac",
    r"d\.? ?n\.", r"ur\.", r"född", r"d\. ?t\.", r"nar\.", r"narozen", r"lahir\b",
    r"tgl\.? lahir", r"født", r"f\. ?d\.",
)  # fmt: skip
_BIRTH_INSIDE = (
    r"birth|geboren|geburt|naissance|nacimiento|nacid[oa]|nascita|nascimento|geboorte|生年月日"
    r"|出生|生日|생년월일|생일|urodzeni|urodzon|födelse|doğum|जन्म|الميلاد|مواليد|الولادة|ولد|ولدت"
    r"|рождени|родил|народжен|народив|fødsel|ngày sinh|sinh ngày|năm sinh|kelahiran"
)
_BIRTH = re.compile(rf"(?i)\b(?:{'|'.join(_BIRTH_WORD_STARTS)})|{_BIRTH_INSIDE}")
# For lower-cased ASCII text: the same words case-sensitively, each beginning with its first
# letter and looking behind it for the word start (`b(?<!\wb)orn` for `\bborn`), so that `re`
# skips to those letters instead of trying every position.
# It only reads ASCII text, so the words in other scripts are left out of it.
_BIRTH_LOWER = re.compile(
    "|".join(
        [f"{w[0]}(?<!\\w{w[0]}){w[1:]}" for w in _BIRTH_WORD_STARTS if w[0].isascii()]
        + [w for w in _BIRTH_INSIDE.split("|") if w[0].isascii()]
    )
)


_DATE_LOWER = re.compile(_DATE.pattern.removeprefix("(?i)"))  # for lower-cased ASCII text


class DateOfBirthDetector(RuleDetector):
    """A date with birth context in the 48 characters before it, or in a birth-named field."""

    name, types = "date-of-birth", frozenset({"DATE_OF_BIRTH"})

    def find(self, text: str, field: str) -> list[Finding]:
        if not HAS_DIGIT.search(text):
            return []
        out, prev_end = [], 0
        field_says = bool(_BIRTH.search(field.rsplit(".", 1)[-1]))
        # ASCII text: the case-sensitive expressions over the lower-cased text find the same
        # spans as the case-insensitive ones, in about half the time; without a birth word
        # anywhere no date can have one before it
        if text.isascii():
            low = text.lower()
            if not field_says and not _BIRTH_LOWER.search(low):
                return []
            dates = _DATE_LOWER.finditer(low)
        else:
            dates = _DATE.finditer(text)
        for m in dates:
            # the 48 characters before (a word cut by the window's edge is not a word)
            if field_says or _BIRTH.search(text, max(prev_end, m.start() - 48), m.start()):
                out.append(self._hit(m.start(), m.end(), 0.85))
            prev_end = m.end()
        return out
