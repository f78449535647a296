"""The multilingual PII evaluation set (`pii_eval/*.txt`) and its per-type, per-language scores.

Unlike `pii_corpus.py` (a Faker generator), the records are hand-written letters, chats, forms,
invoices, CVs, code, configs and logs in English, German, French, Spanish, Italian, Portuguese
(Brazil and Portugal), Dutch, Polish, Swedish, Turkish, Japanese, Chinese, Korean, Hindi and
Arabic (`heldout` adds Russian, Vietnamese, Indonesian, Czech and Danish). Four splits:
`tuning` and `dev` (the detectors may be tuned on them), `validation` (written independently
of the detectors and reported as held-out by an earlier release, then read while improving
them) and `heldout` (written independently of the detectors and of the other splits, the
largest, with hard negatives in every language; only reported, never tuned on).

    python tests/data/pii_eval.py [--split dev|validation|heldout] [--types ...] [--errors]

Matching is the quality test's: a gold span is found when a prediction of its type overlaps
it; a prediction is correct when it overlaps a gold span of its type. API_KEY and SECRET form
one family for matching (a provider key reported as a generic secret still counts as found).
`cover` is the fraction of gold characters that predictions of the same type cover (an address
cut short is found but poorly covered).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent / "pii_eval"
SPLITS = ("tuning", "dev", "validation", "heldout")
STRUCTURED = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "US_SSN", "IP_ADDRESS", "URL_CREDENTIALS",
              "API_KEY", "PRIVATE_KEY", "SECRET", "DATE_OF_BIRTH")  # fmt: skip
_MARK = re.compile(r"\[\[([A-Z_]+)\|(.*?)\]\]", re.S)
_FAMILY = {"SECRET": "API_KEY"}


@dataclass
class Record:
    lang: str
    kind: str
    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)


def parse(source: str) -> list[Record]:
    """Records of one split file (see the file's header for the format)."""
    out: list[Record] = []
    for chunk in re.split(r"(?m)^### ", source)[1:]:
        header, _, body = chunk.partition("\n")
        lang, kind = header.split()
        text, spans, pos = [], [], 0
        length = 0
        for m in _MARK.finditer(body):
            text.append(body[pos : m.start()])
            length += m.start() - pos
            spans.append((length, length + len(m[2]), m[1]))
            text.append(m[2])
            length += len(m[2])
            pos = m.end()
        text.append(body[pos:])
        joined = "".join(text)
        out.append(Record(lang, kind, joined[:-1] if joined.endswith("\n") else joined, spans))
    return out


def load(split: str) -> list[Record]:
    if split not in SPLITS:
        raise ValueError(f"split {split!r}; choose from {SPLITS}")
    return parse((HERE / f"{split}.txt").read_text(encoding="utf-8"))


@dataclass
class Cell:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    gold_chars: int = 0
    covered: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def cover(self) -> float:
        return self.covered / self.gold_chars if self.gold_chars else 1.0


def _same(a: str, b: str) -> bool:
    return _FAMILY.get(a, a) == _FAMILY.get(b, b)


def language(lang: str) -> str:
    """Report language: `en-GB` counts as `en`, `pt-BR` and `pt` stay apart."""
    return "en" if lang.startswith("en") else lang


def evaluate(records: Sequence[Record], preds: Sequence[list[tuple[int, int, str]]]):
    """{(type, language): Cell} plus the error list [(lang, 'FN'|'FP', type, value, context)]."""
    cells: dict[tuple[str, str], Cell] = {}
    errs = []
    for r, pred in zip(records, preds, strict=True):
        lang = language(r.lang)
        for gs, ge, gt in r.spans:
            same = [(ps, pe) for ps, pe, pt in pred if _same(pt, gt) and ps < ge and gs < pe]
            c = cells.setdefault((gt, lang), Cell())
            c.tp, c.fn = c.tp + bool(same), c.fn + (not same)
            c.gold_chars += ge - gs
            c.covered += len({i for ps, pe in same for i in range(max(ps, gs), min(pe, ge))})
            if not same:
                errs.append((lang, "FN", gt, r.text[gs:ge], r.text[max(0, gs - 30) : ge + 10]))
        for ps, pe, pt in pred:
            if not any(_same(pt, gt) and ps < ge and gs < pe for gs, ge, gt in r.spans):
                cells.setdefault((pt, lang), Cell()).fp += 1
                errs.append((lang, "FP", pt, r.text[ps:pe], r.text[max(0, ps - 30) : pe + 10]))
    return cells, errs


def totals(cells: dict[tuple[str, str], Cell]) -> dict[str, Cell]:
    """Cells summed over languages, per type."""
    out: dict[str, Cell] = {}
    for (t, _), c in cells.items():
        s = out.setdefault(t, Cell())
        for k in ("tp", "fp", "fn", "gold_chars", "covered"):
            setattr(s, k, getattr(s, k) + getattr(c, k))
    return out


def _row(t: str, lang: str, c: Cell) -> str:
    return f"| {t} | {lang} | {c.tp + c.fn} | {c.recall:.3f} | {c.precision:.3f} | {c.cover:.2f} |"


def table(cells: dict[tuple[str, str], Cell]) -> str:
    """A Markdown table: one row per type and language, then the per-type totals."""
    lines = ["| type | lang | gold | recall | precision | cover |", "|---|---|---|---|---|---|"]
    lines += [_row(t, lang, c) for (t, lang), c in sorted(cells.items())]
    lines += [_row(f"**{t}**", "all", c) for t, c in sorted(totals(cells).items())]
    return "\n".join(lines)


def run(split: str, scanner) -> tuple[list[Record], dict, list]:
    records = load(split)
    found = scanner.scan([r.text for r in records])
    preds = [[(f.start, f.end, f.type) for f in fs] for fs in found]
    cells, errs = evaluate(records, preds)
    return records, cells, errs


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from opengemma.safety.pii import Scanner

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="tuning", choices=SPLITS)
    ap.add_argument("--types", default=None)
    ap.add_argument("--errors", action="store_true", help="list every miss and false alarm")
    ap.add_argument("--detector", default="rules", choices=("rules", "gemma", "gemma-only"),
                    help="rules; rules + the Gemma second pass; the Gemma pass alone")  # fmt: skip
    ap.add_argument("--model", default=None, help="GGUF / HF dir for the Gemma pass")
    args = ap.parse_args(argv)
    if args.detector == "rules":
        _, cells, errs = run(args.split, Scanner(args.types, strict=True))
    else:
        from opengemma.safety.pii_gemma import GemmaPIIDetector

        gemma = GemmaPIIDetector(args.model)
        if args.detector == "gemma":
            _, cells, errs = run(args.split, Scanner(args.types, strict=True, second_pass=[gemma]))
        else:
            records = load(args.split)
            found = gemma.second_pass([r.text for r in records], [[] for _ in records])
            preds = [[(f.start, f.end, f.type) for f in fs] for fs in found]
            cells, errs = evaluate(records, preds)
    print(table(cells))
    if args.errors:
        for e in errs:
            print(*e, sep=" | ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
