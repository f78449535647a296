"""A labelled PII / secrets corpus, generated with Faker in several locales, and its scoring.

Each sample is text plus the exact character spans of every planted value and its type.
Templates cover prose, chat logs, CSV-like lines, JSON, code with secrets, and hard negatives
(order numbers, UUIDs, git hashes, Luhn-invalid card-like numbers, versions, timestamps) that
must not be flagged. Used by the quality test and by `bench/scrub_quality.py`.
"""

from __future__ import annotations

import base64
import random
import re
import string
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import phonenumbers
from faker import Faker

LOCALES = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES",
           "it_IT": "IT", "nl_NL": "NL", "en_IN": "IN"}  # fmt: skip
IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
ADDRESS_LOCALES = ("en_US", "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")

TEMPLATES: dict[str, list[str]] = {
    "prose": [
        "Hi, my name is {PERSON} and I was born on {DOB}. Reach me at {EMAIL} or {PHONE}.",
        "Please ship the replacement to {STREET_ADDRESS}. Thanks, {PERSON}",
        "{PERSON} called from {PHONE} about order {ORDER}; refund to card {CREDIT_CARD}.",
        "Wire the deposit to IBAN {IBAN} (account holder: {PERSON}).",
        "My SSN is {US_SSN} and my date of birth is {DOB}. I moved to {STREET_ADDRESS}.",
        "The failed logins came from {IP_ADDRESS} at {TS}, then from {IP_ADDRESS}.",
        "Dear {PERSON},\n\nyour ticket {TICKET} was updated on {DATE}. Version {VERSION} fixes it.",
        "I spoke with {PERSON} from {COMPANY} yesterday; she lives at {STREET_ADDRESS}.",
        "Patient {PERSON} (DOB: {DOB}) was seen on {DATE}. Contact: {PHONE}.",
        "Forwarding {PERSON}'s note: please use {EMAIL} from now on, not {EMAIL}.",
        "Mein Name ist {PERSON}, geboren am {DOB}. Telefon: {PHONE}, E-Mail: {EMAIL}.",
        "Bonjour, je suis {PERSON}. Mon adresse : {STREET_ADDRESS}. Tél. {PHONE}.",
    ],
    "chat": [
        "[{TIME}] user: hey, i'm {PERSON}\n[{TIME}] agent: Hi {FIRST}! How can I help?\n"
        "[{TIME}] user: my email is {EMAIL} and phone {PHONE}",
        "customer: the full number is {CREDIT_CARD}, exp {EXP}\n"
        "bot: Thanks! Charging order {ORDER}.",
        "user: can you check ssn {US_SSN}?\nassistant: I can't look that up. Ticket {TICKET}.",
        "{FIRST}: ok deployed {VERSION} to {IP_ADDRESS}\n{FIRST}: rollback hash {SHORTHASH}",
        "USER: my bank is {IBAN}, name {PERSON}\nASSISTANT: Noted, reference {UUID}.",
    ],
    "csv": [
        'name,email,phone,address\n{PERSON},{EMAIL},{PHONE},"{STREET_ADDRESS}"',
        "{NUM},{PERSON},{US_SSN},{DATE},{ORDER}",
        "id;full_name;iban;ip\n{NUM};{PERSON};{IBAN};{IP_ADDRESS}",
        "{UUID},{EMAIL},{BADCARD},{TS}",
    ],
    "json": [
        '{"name": "{PERSON}", "email": "{EMAIL}", "phone": "{PHONE}", "ip": "{IP_ADDRESS}"}',
        '{"user": {"full_name": "{PERSON}", "date_of_birth": "{DOB}"}, "request_id": "{UUID}"}',
        '{"order": "{ORDER}", "card": "{CREDIT_CARD}", "shipping": "{STREET_ADDRESS}"}',
        '{"commit": "{GITHASH}", "version": "{VERSION}", "created": "{TS}"}',
    ],
    "code": [
        'AWS_ACCESS_KEY_ID = "{AWS}"\nAWS_SECRET_ACCESS_KEY = "{GENERIC}"',
        'headers = {"Authorization": "Bearer {JWT}"}  # request {UUID}',
        'client = OpenAI(api_key="{OPENAI}")\nresp = client.responses.create(model="x")',
        "DATABASE_URL=postgres://{URL_CREDENTIALS}@db.internal:5432/prod",
        "git clone https://{URL_CREDENTIALS}@github.com/org/repo.git  # at {GITHASH}",
        'key = """{PRIVATE_KEY}"""\nsign(key, payload)',
        'stripe.api_key = "{STRIPE}"\nexport GITHUB_TOKEN={GHP}',
        "slack_token: {SLACK}\nhf_token: {HF}\nretries: 3",
        "config = {{'client_secret': '{GENERIC}', 'timeout': 30}}",
        "redis://{URL_CREDENTIALS}@cache:6379/0  # build {BUILD}",
        "# sha256 {SHA256}\nimport os\nTOKEN = os.environ['GITLAB_TOKEN']  # {GLPAT}",
    ],
    "negative": [
        "Order {ORDER} shipped on {DATE} via tracking {TRACKING}. Ref {UUID}.",
        "Fixed in commit {GITHASH} ({SHORTHASH}); bump to v{VERSION}; build {BUILD}.",
        "Test card {BADCARD} was declined as expected; retry at {TS}.",
        "{TS} INFO worker-{NUM} processed {NUM} items in {FLOAT}s request_id={UUID}",
        "Release {VERSION} on {DATE}: see section 4.2.1 and table 10.3 of the spec.",
        "The meeting with {COMPANY} is at {TIME} on {DATE} in {CITY}.",
        "sha256: {SHA256}\nmd5: {MD5}\nsize: {NUM} bytes",
        "Invoice INV-{YEAR}-{NUM} total {MONEY} due {DATE}; PO #{ORDER}.",
        "Ticket {TICKET}: upgrade from {VERSION} to {VERSION} failed at {TS}.",
        "Card-like test numbers {BADCARD} and {BADCARD} must fail validation.",
    ],
}
LABELLED = {"PERSON", "FIRST", "EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS",
            "URL_CREDENTIALS", "PRIVATE_KEY", "STREET_ADDRESS", "DOB", "AWS", "GENERIC", "JWT",
            "OPENAI", "STRIPE", "GHP", "SLACK", "HF", "GLPAT"}  # fmt: skip
TYPE_OF = {"FIRST": "PERSON", "DOB": "DATE_OF_BIRTH", "AWS": "API_KEY", "GENERIC": "SECRET",
           "JWT": "API_KEY", "OPENAI": "API_KEY", "STRIPE": "API_KEY", "GHP": "API_KEY",
           "SLACK": "API_KEY", "HF": "API_KEY", "GLPAT": "API_KEY"}  # fmt: skip


@dataclass
class Sample:
    """One text and its gold spans `(start, end, type)`."""

    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    kind: str = ""
    locale: str = ""


class CorpusGenerator:
    """Deterministic sample factory: `CorpusGenerator(seed).samples(n)`."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.fakers = {loc: Faker(loc) for loc in LOCALES}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed * 100 + i)

    def samples(self, n: int) -> list[Sample]:
        kinds = list(TEMPLATES)
        weights = [4, 2, 2, 2, 3, 3]
        return [self.sample(self.rng.choices(kinds, weights)[0]) for _ in range(n)]

    def sample(self, kind: str) -> Sample:
        locale = self.rng.choice(list(LOCALES))
        template = self.rng.choice(TEMPLATES[kind])
        text, spans = "", []
        for literal, slot in _parse(template):
            text += literal
            if slot is None:
                continue
            value = self.value(slot, locale)
            if slot in LABELLED:
                kind_ = TYPE_OF.get(slot, slot)
                spans.append((len(text), len(text) + len(value), kind_))
            text += value
        return Sample(text, spans, kind, locale)

    # -------------------------------------------------------------- values of each slot

    def value(self, slot: str, locale: str) -> str:
        f, r = self.fakers[locale], self.rng
        makers: dict[str, Callable[[], str]] = {
            "PERSON": lambda: f.name() if r.random() < 0.7 else f"{f.first_name()} {f.last_name()}",
            "FIRST": f.first_name,
            "EMAIL": lambda: self.email(f),
            "PHONE": lambda: self.phone(locale),
            "CREDIT_CARD": self.card,
            "IBAN": self.iban,
            "US_SSN": self.fakers["en_US"].ssn,
            "IP_ADDRESS": lambda: r.choice([f.ipv4, f.ipv4_private, f.ipv6])(),
            "URL_CREDENTIALS": lambda: f"{f.user_name()}:{_rand(r, r.randint(8, 20), '!$*_-')}",
            "PRIVATE_KEY": self.pem,
            "STREET_ADDRESS": self.address,
            "DOB": lambda: self.date(f.date_of_birth(minimum_age=18, maximum_age=90)),
            "DATE": lambda: self.date(f.date_between("-3y", "today")),
            "AWS": lambda: (
                "AKIA" + "".join(r.choices(string.ascii_uppercase + string.digits, k=16))
            ),
            "GENERIC": lambda: _rand(r, r.choice([24, 32, 40])),
            "JWT": self.jwt,
            "OPENAI": lambda: "sk-proj-" + _rand(r, 48, "_-"),
            "STRIPE": lambda: r.choice(["sk_live_", "sk_test_", "rk_live_"]) + _rand(r, 24),
            "GHP": lambda: "ghp_" + _rand(r, 36),
            "SLACK": lambda: (
                f"xoxb-{r.randint(10**10, 10**11)}-{r.randint(10**10, 10**11)}-" + _rand(r, 24)
            ),
            "HF": lambda: "hf_" + "".join(r.choices(string.ascii_letters, k=34)),
            "GLPAT": lambda: "glpat-" + _rand(r, 20, "_-"),
        }
        return makers.get(slot, lambda: self.filler(slot, f))()

    def filler(self, slot: str, f: Faker) -> str:
        r = self.rng
        fillers: dict[str, Callable[[], str]] = {
            "ORDER": lambda: r.choice(["#", "ORD-", "", "A-"]) + str(r.randint(10**5, 10**10)),
            "TICKET": lambda: f"{r.choice(['JIRA', 'SUP', 'INC'])}-{r.randint(1, 99999)}",
            "TRACKING": lambda: "1Z" + _rand(r, 16).upper(),
            "UUID": lambda: str(uuid.UUID(int=r.getrandbits(128))),
            "GITHASH": lambda: f"{r.getrandbits(160):040x}",
            "SHORTHASH": lambda: f"{r.getrandbits(28):07x}",
            "SHA256": lambda: f"{r.getrandbits(256):064x}",
            "MD5": lambda: f"{r.getrandbits(128):032x}",
            "BADCARD": self.bad_card,
            "VERSION": lambda: ".".join(str(r.randint(0, 20)) for _ in range(r.choice([2, 3, 3]))),
            "BUILD": lambda: f"{r.randint(1, 30)}.0.{r.randint(10000, 30000)}.{r.randint(1, 9999)}",
            "TS": lambda: f.date_time_this_decade().isoformat() + r.choice(["Z", "", ".123Z"]),
            "TIME": lambda: f.time(),
            "NUM": lambda: str(r.randint(1, 999999)),
            "FLOAT": lambda: f"{r.random() * 100:.3f}",
            "YEAR": lambda: str(r.randint(2015, 2026)),
            "MONEY": lambda: f"${r.randint(1, 9999)}.{r.randint(0, 99):02d}",
            "EXP": lambda: f"{r.randint(1, 12):02d}/{r.randint(25, 32)}",
            "COMPANY": f.company,
            "CITY": f.city,
        }
        return fillers[slot]()

    def email(self, f: Faker) -> str:
        if self.rng.random() < 0.6:
            return f.email(safe=False)  # Faker's default is a reserved example.* domain
        user = f"{f.first_name()}.{f.last_name()}".lower()
        user = re.sub(r"[^a-z.]", "", user.encode("ascii", "ignore").decode()) or "user"
        return f"{user}+{self.rng.randint(1, 99)}@{f.domain_name(2)}"

    def phone(self, locale: str) -> str:
        region, f = LOCALES[locale], self.fakers[locale]
        for _ in range(30):
            raw = f.phone_number()
            try:
                num = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(num):
                return raw if self.rng.random() < 0.6 else self._format(num)
        num = phonenumbers.example_number(region)
        return self._format(num)

    def _format(self, num: phonenumbers.PhoneNumber) -> str:
        fmt = self.rng.choice([phonenumbers.PhoneNumberFormat.E164,
                               phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                               phonenumbers.PhoneNumberFormat.NATIONAL])  # fmt: skip
        return phonenumbers.format_number(num, fmt)

    def card(self) -> str:
        f = self.fakers["en_US"]
        kind = self.rng.choice(["visa16", "mastercard", "amex", "discover", "jcb16", "visa13"])
        digits = f.credit_card_number(kind)
        return _group(digits, self.rng.choice(["", " ", "-"]), 15 if kind == "amex" else 0)

    def bad_card(self) -> str:
        card = self.fakers["en_US"].credit_card_number("visa16")
        last = str((int(card[-1]) + self.rng.randint(1, 9)) % 10)
        return _group(card[:-1] + last, self.rng.choice(["", " ", "-"]), 0)

    def iban(self) -> str:
        raw = self.fakers[self.rng.choice(IBAN_LOCALES)].iban()
        return (
            " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))
            if self.rng.random() < 0.5
            else raw
        )

    def address(self) -> str:
        f = self.fakers[self.rng.choice(ADDRESS_LOCALES)]
        text = f.address() if self.rng.random() < 0.4 else f.street_address()
        return ", ".join(line.strip() for line in text.splitlines())

    def date(self, d: object) -> str:
        fmt = self.rng.choice(["%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%B %d, %Y", "%d %B %Y",
                               "%d.%m.%Y", "%b %d %Y"])  # fmt: skip
        return d.strftime(fmt)  # type: ignore[attr-defined]

    def pem(self) -> str:
        kind = self.rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY",
                                "OPENSSH PRIVATE KEY"])  # fmt: skip
        body = base64.b64encode(self.rng.randbytes(self.rng.choice([120, 300, 900]))).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"

    def jwt(self) -> str:
        def seg(n: int) -> str:
            return base64.urlsafe_b64encode(self.rng.randbytes(n)).decode().rstrip("=")

        return "eyJhbGciOiJIUzI1NiJ9.eyJ" + seg(30) + "." + seg(32)


def _rand(r: random.Random, n: int, extra: str = "") -> str:
    return "".join(r.choices(string.ascii_letters + string.digits + extra, k=n))


def _group(digits: str, sep: str, amex: int) -> str:
    if not sep:
        return digits
    cuts = (4, 10, 15) if amex else tuple(range(4, len(digits) + 4, 4))
    parts, prev = [], 0
    for c in cuts:
        parts.append(digits[prev:c])
        prev = c
    return sep.join(p for p in parts if p)


def _parse(template: str) -> Iterable[tuple[str, str | None]]:
    """`"a {X} b"` -> ("a ", "X"), (" b", None); `{{`/`}}` are literal braces."""
    pos = 0
    for m in re.finditer(r"\{\{|\}\}|\{([A-Z_0-9]+)\}", template):
        if m.group(1) is None:
            yield template[pos : m.start()] + m.group()[0], None
        else:
            yield template[pos : m.start()], m.group(1)
        pos = m.end()
    yield template[pos:], None


# ------------------------------------------------------------------------------ scoring


@dataclass
class Score:
    """Overlap-matched counts for one type."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def f_beta(self, beta: float = 2.0) -> float:
        p, r = self.precision, self.recall
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0


def score(samples: list[Sample], predictions: list[list[tuple[int, int, str]]]) -> dict[str, Score]:
    """Per-type scores: a gold span is found when a prediction of its type overlaps it; a
    prediction is correct when it overlaps a gold span of its type."""
    out: dict[str, Score] = {}
    for s, pred in zip(samples, predictions, strict=True):
        for gs, ge, gt in s.spans:
            hit = any(pt == gt and ps < ge and gs < pe for ps, pe, pt in pred)
            sc = out.setdefault(gt, Score())
            sc.tp, sc.fn = sc.tp + hit, sc.fn + (not hit)
        for ps, pe, pt in pred:
            if not any(pt == gt and ps < ge and gs < pe for gs, ge, gt in s.spans):
                out.setdefault(pt, Score()).fp += 1
    return out


def errors(samples: list[Sample], predictions: list[list[tuple[int, int, str]]], type_: str):
    """(false negatives, false positives) of one type as (text, value) pairs, for tuning."""
    fns, fps = [], []
    for s, pred in zip(samples, predictions, strict=True):
        for gs, ge, gt in s.spans:
            if gt == type_ and not any(pt == gt and ps < ge and gs < pe for ps, pe, pt in pred):
                fns.append((s.text, s.text[gs:ge]))
        for ps, pe, pt in pred:
            if pt == type_ and not any(pt == gt and ps < ge and gs < pe for gs, ge, gt in s.spans):
                fps.append((s.text, s.text[ps:pe]))
    return fns, fps
