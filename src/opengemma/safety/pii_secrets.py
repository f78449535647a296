"""Secrets: credentials in URLs, provider API keys, assigned high-entropy values, PEM keys."""

from __future__ import annotations

import re
from collections.abc import Iterator

from opengemma.safety.pii_base import (
    Finding,
    RuleDetector,
    finditer_at,
    occurrences,
    shannon_entropy,
)


class UrlCredentialsDetector(RuleDetector):
    """The `user:password` part of `scheme://user:password@host` URLs."""

    name, types = "url-credentials", frozenset({"URL_CREDENTIALS"})
    _re = re.compile(
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://"
        r"(?P<cred>[^\s:/@?#\"'<>]+:[^\s/@\"'<>]+)@[\w\[]"
    )

    def find(self, text: str, field: str) -> list[Finding]:
        if "://" not in text:
            return []
        return [self._hit(m.start("cred"), m.end("cred"), 0.99) for m in self._re.finditer(text)]


# Provider token formats (published prefixes and alphabets), each with the literals every one of
# its tokens begins with (where `finditer_at` tries the expression).
_PROVIDERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("AKIA", "ASIA", "ABIA", "ACCA"), r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"),  # AWS key id
    (tuple(f"gh{c}_" for c in "pousr"), r"gh[pousr]_[A-Za-z0-9]{36,255}"),  # GitHub tokens
    (("github_pat_",), r"github_pat_[A-Za-z0-9_]{22,255}"),  # GitHub fine-grained PAT
    (("glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab PAT
    (tuple(f"xox{c}-" for c in "abposr"), r"xox[abposr]-[A-Za-z0-9-]{10,}"),  # Slack tokens
    (("sk_", "rk_", "pk_"), r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe
    (("AIza",), r"AIza[0-9A-Za-z_-]{35}"),  # Google API key
    (("sk-ant-",), r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{40,}"),  # Anthropic
    (("sk-",), r"sk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{32,}"),  # OpenAI
    (("hf_",), r"hf_[A-Za-z]{30,}"),  # Hugging Face
    (("SG.",), r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),  # SendGrid
    (("npm_",), r"npm_[A-Za-z0-9]{36}"),  # npm
    (("pypi-AgEIcHlwaS5vcmc",), r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}"),  # PyPI
    (("dop_v1_",), r"dop_v1_[a-f0-9]{64}"),  # DigitalOcean
    (tuple(f"shp{k}_" for k in ("at", "ca", "pa", "ss")), r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"),
    (("AC", "SK"), r"(?:AC|SK)[0-9a-f]{32}"),  # Twilio
    (("eyJ",), r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWT
)
_PROVIDER_KEYS = re.compile("|".join(pattern for _, pattern in _PROVIDERS))
_PROVIDER_STARTS = tuple(dict.fromkeys(lit for lits, _ in _PROVIDERS for lit in lits))
_KEY_NAME = (
    r"(?:api[_-]?key|apikey|secret|token|passwd|password|pwd|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth[_-]?key|credentials?|signing[_-]?key)"
)
_ASSIGNED = re.compile(
    rf"(?i){_KEY_NAME}[\w.-]*['\"]?\s*(?:=|:|=>|:=)\s*(?:[rbu]?['\"])?"
    r"(?P<value>[A-Za-z0-9_\-+/=.~]{16,512})"
    r"|\bBearer\s+(?P<bearer>[A-Za-z0-9_\-.~+/]{16,512}=*)"
)
_KEY_WORD = re.compile(
    r"(?i)key|secret|token|pass|pwd|credential|bearer|kennwort|contrase|mot de|mdp|senha"
    r"|wachtwoord|has[łl]o|[şs]ifre|lösenord|parola|clave"
)  # a cheap gate
# A password assigned to a password key in the languages covered: shorter than a machine key,
# so it must mix letters with digits or symbols and must not be a name (an env var, a setting).
_PASSWORD = re.compile(
    r"(?i)(?<![A-Za-z])(?:password|passwd|pwd|pass|passphrase|passwort|kennwort|contraseña"
    r"|mot de passe|mdp|senha|wachtwoord|hasło|haslo|şifre|sifre|lösenord|parola|clave)"
    r"(?:[_-]?\w{0,12})?['\"]?"
    r"[ \t]*(?:=|:|=>|:=)[ \t]*[rbu]?['\"]?(?P<value>[^\s\"'`,;<>]{8,128})"
)
# Passwords given on a command line or in a password file: `curl -u ops:PASS`, `mysql -pPASS`,
# `--password=PASS`, and `~/.pgpass` lines (`host:port:database:user:password`).
_COMMAND_LINE = re.compile(
    r"(?:\s(?:-u|--user)[ =]['\"]?[^\s:'\"]+:(?P<userpass>[^\s'\"]{6,128})"
    r"|\s--password[ =]['\"]?(?P<flag>[^\s'\"]{6,128})"
    r"|\bmysql(?:dump)?\b[^\n]*?\s-p(?P<mysql>[^\s'\"-][^\s'\"]{5,127}))"
)
_PGPASS = re.compile(r"(?m)^[^\s:#]+:(?:\d{2,5}|\*):[^\s:]+:[^\s:]+:(?P<value>[^\s]{6,128})$")
_PGPASS_GATE = re.compile(r":(?:\d{2,5}|\*):[^\s:]+:[^\s:]+:")


def _command_line_patterns(text: str) -> tuple[re.Pattern[str], ...]:
    """The password-on-a-command-line expressions worth running on `text` (cheap gates)."""
    flags = "-u" in text or "--user" in text or "--password" in text or "mysql" in text
    return (_COMMAND_LINE,) * flags + (_PGPASS,) * bool(_PGPASS_GATE.search(text))


_IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Z_][A-Z0-9_]*|[a-z]+(?:[A-Z][a-z]+)+")


def looks_like_password(value: str) -> bool:
    """8+ characters mixing letters with digits or symbols; not a placeholder, a reference
    (`${X}`, `%s`, `os.environ[...]`), an identifier (`DB_PASSWORD`, `settings.pwd`) or a call."""
    if (
        not value
        or value[0] in "$%{<[("
        or "(" in value
        or "[" in value
        or _IDENTIFIER.fullmatch(value)
        or is_placeholder(value)
    ):
        return False
    letters = any(c.isalpha() for c in value)
    other = any(c.isdigit() for c in value) or any(not c.isalnum() for c in value)
    return letters and other


_KEY_FIELD = re.compile(rf"(?i){_KEY_NAME}s?$")


def looks_random(value: str, min_bits: float = 3.0) -> bool:
    """A plausible machine-made secret: long, mixed character classes, high entropy."""
    classes = sum(any(f(c) for c in value) for f in (str.islower, str.isupper, str.isdigit))
    return len(value) >= 16 and classes >= 2 and shannon_entropy(value) >= min_bits


_PLACEHOLDER = re.compile(
    r"(?i)(?:x{4,}|\*{3,}|•{3,}|#{4,}|\.{4,}|0{8,}|<[^<>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|%\(?\w+\)?s"
    r"|\b(?:your|my|example|sample|dummy|placeholder|redacted|changeme|insert|replace|todo"
    r"|fixme|xxx)(?:[_-]|\b|\d)|(?-i:EXAMPLE))"  # AWS's documented keys end in EXAMPLE
)


def is_placeholder(value: str) -> bool:
    """A masked or template value (`xxxx`, `****`, `<password>`, `${VAR}`, `your-token-here`),
    or one whose body after a provider prefix is a single repeated character."""
    if _PLACEHOLDER.search(value):
        return True
    body = value.rsplit("_", 1)[-1].rsplit("-", 1)[-1]
    return len(body) >= 8 and len(set(body.lower())) <= 2


_KEY_WORD_LOWER = re.compile(_KEY_WORD.pattern.removeprefix("(?i)"))


def has_key_word(text: str) -> bool:
    """`_KEY_WORD.search(text)`; on ASCII text a case-sensitive scan of the lower-cased text
    (the same answer, four times faster than a case-insensitive alternation)."""
    if text.isascii():
        return _KEY_WORD_LOWER.search(text.lower()) is not None
    return _KEY_WORD.search(text) is not None


# Case-sensitive twins of the case-insensitive expressions, for lower-cased ASCII text.
_LOWER = {
    p: re.compile(p.pattern.removeprefix("(?i)").replace("Bearer", "bearer"))
    for p in (_ASSIGNED, _PASSWORD)
}


# The lower-case literals every match of each twin begins with.
_STARTS = {
    _ASSIGNED: ("api", "secret", "token", "passwd", "password", "pwd", "access", "private",
                "client", "auth", "credential", "signing", "bearer"),
    _PASSWORD: ("pass", "pwd", "kennwort", "contraseña", "mot de passe", "mdp", "senha",
                "wachtwoord", "hasło", "haslo", "şifre", "sifre", "lösenord", "parola", "clave"),
}  # fmt: skip


def _finditer(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)`; on ASCII text its twin over the lower-cased text, tried only
    where one of its key words starts (the same spans, several times faster; read the values
    from `text` by offset)."""
    if text.isascii():
        low = text.lower()
        return finditer_at(_LOWER[pattern], low, occurrences(low, _STARTS[pattern]))
    return pattern.finditer(text)


class ApiKeyDetector(RuleDetector):
    """API_KEY: provider key formats and Bearer tokens. SECRET (lower confidence): a random-
    looking value assigned to a secret-ish key (`password=`, `token:`) or in a key-named field."""

    name, types = "api-key", frozenset({"API_KEY", "SECRET"})

    def find(self, text: str, field: str) -> list[Finding]:
        out = []
        for m in finditer_at(_PROVIDER_KEYS, text, occurrences(text, _PROVIDER_STARTS)):
            if (m.start() == 0 or not text[m.start() - 1].isalnum()) and not (
                m.end() < len(text) and text[m.end()].isalnum()
            ):
                if not is_placeholder(m.group()):
                    out.append(self._hit(m.start(), m.end(), 0.99, "API_KEY"))
        keyed = text.isascii() or has_key_word(text)  # ASCII: the key words are the starts
        for m in _finditer(_ASSIGNED, text) if keyed else ():
            group = "value" if m.group("value") else "bearer"
            start, value = m.start(group), text[m.start(group) : m.end(group)].rstrip(".")
            if looks_random(value) and not is_placeholder(value):
                type_ = "API_KEY" if group == "bearer" else "SECRET"
                out.append(
                    self._hit(start, start + len(value), 0.8 if group == "bearer" else 0.6, type_)
                )
        for m in _finditer(_PASSWORD, text) if keyed else ():
            value = text[m.start("value") : m.end("value")].rstrip(".")
            if looks_like_password(value):
                out.append(
                    self._hit(m.start("value"), m.start("value") + len(value), 0.55, "SECRET")
                )
        for pattern in _command_line_patterns(text):
            for m in pattern.finditer(text):
                group = m.lastgroup or "value"
                value = m.group(group)
                if looks_like_password(value):
                    out.append(self._hit(m.start(group), m.end(group), 0.55, "SECRET"))
        leaf = field.rsplit(".", 1)[-1]
        value = text.strip()
        if _KEY_FIELD.search(leaf) and looks_random(value) and " " not in value:
            if not is_placeholder(value):
                start = len(text) - len(text.lstrip())
                out.append(self._hit(start, start + len(value), 0.6, "SECRET"))
        return out


class PrivateKeyDetector(RuleDetector):
    name, types = "pem-private-key", frozenset({"PRIVATE_KEY"})
    _re = re.compile(
        r"-----BEGIN ([A-Z0-9 ]{0,24}PRIVATE KEY(?: BLOCK)?)-----"
        r"(?:.{0,65536}?-----END \1-----|[A-Za-z0-9+/=:,\-\s\\]*)",
        re.S,
    )

    def find(self, text: str, field: str) -> list[Finding]:
        if "PRIVATE KEY" not in text:
            return []
        return [
            self._hit(m.start(), m.end(), 0.99)
            for m in self._re.finditer(text)
            if self.has_body(m.group())
        ]

    @staticmethod
    def has_body(block: str) -> bool:
        """A key, not a mention or a template: 40+ base64 characters between the markers that
        are not a placeholder (`...`, `<your key>`, `xxxx`)."""
        body = re.sub(r"-----(?:BEGIN|END) [A-Z0-9 ]+-----", "", block).replace("\\n", "\n")
        body = re.sub(r"(?m)^[A-Za-z-]+: .*$", "", body)  # Proc-Type:, DEK-Info: headers
        chars = re.sub(r"[^A-Za-z0-9+/=]", "", body)
        return len(chars) >= 40 and not is_placeholder(body.strip()) and len(set(chars)) > 10
