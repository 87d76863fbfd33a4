"""`python -m bench exactness`: how close the served reduced-precision vectors are to float32, row
by row, and what keeping them close costs.

The texts: the bench corpus (``--sentences``), the guard's probe (``precision.PROBE_TEXTS``) and
short inputs (``SHORT``: single words, "ok", "A", numbers, and the first one to six words of
corpus sentences, as search queries are). Each is embedded three ways, in length-sorted batches
of 32 as a busy worker computes them: at float32 (the reference), at ``--dtype`` everywhere
(``reduced``: what a configured ``dtype = "bfloat16"`` serves), and as ``dtype = "auto"`` serves
``--dtype`` (``served``: rows of up to ``precision.SHORT_MAX_TOKENS`` tokens with float32
activations, only their matmuls at ``--dtype``). Figures:
each way's per-row cosine to float32 by token-length bucket (rows, mean, lowest, rows below
``precision.MIN_ROW_COSINE``) and the reduced way's worst rows.

Then speed, in process on ``--threads`` torch threads (a worker's one by default: it is pinned to
one core): sentences/s of the three ways on the corpus and on the short inputs
(``bench.raw.measure``: tokenize plus forward, sorted batches of 32), interleaved for ``--rounds``
rounds so each sees the same noise. The figures are each way's median over ``reduced``'s per
workload, and each round's ratio. Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from appliance.config import ModelConfig, resolve_model_path
from bench.corpus import sentences
from bench.raw import cores, measure
from bench.target import MODEL_PATH
from workers.runtimes import Runtime, load_runtime
from workers.runtimes.precision import SHORT_MAX_TOKENS, MIN_ROW_COSINE, PROBE_TEXTS

WAYS = ("float32", "reduced", "served")
WORKLOADS = ("corpus", "short")
BATCH = 32
BUCKETS = (3, 4, 6, 8, 10, 12, 13, 16, 24, 32, 48, 64, 96, 128, 256, 512)  # lower bounds, in tokens
SINGLE = ("ok", "A", "a", "I", "yes", "no", "thanks", "hello", "?", "OK!", "0", "7", "42", "1999", "3.5",
          "100000", "2026-12-31", "Paris", "dog", "the")  # fmt: skip
QUERY_WORDS = (1, 2, 3, 4, 5, 6)
WORST = 10


@dataclass(frozen=True, slots=True)
class Bucket:
    low: int  # tokens, inclusive
    high: int  # exclusive
    rows: int
    mean: float
    lowest: float
    below: int  # rows under MIN_ROW_COSINE


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench exactness", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=MODEL_PATH, help="the model's directory or package: ref")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"], help="the reduced precision")
    p.add_argument("--sentences", type=int, default=5000, help="corpus sentences (default: all %(default)s)")
    p.add_argument("--queries", type=int, default=400, help="corpus sentences cut into 1..6-word queries")
    p.add_argument("--seconds", type=float, default=3.0, help="per speed point and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads for the speed (a worker's: 1)")
    p.add_argument("--quick", action="store_true", help="a few sentences and a fraction of a second (smoke run)")
    args = p.parse_args(list(argv))
    if args.quick:
        args.sentences, args.queries, args.seconds, args.rounds = 64, 8, 0.2, 1
    return args


def short_texts(queries: int) -> list[str]:
    """Single words, "ok", numbers, and the first 1..6 words of ``queries`` corpus sentences."""
    cut = [" ".join(s.split()[:n]) for s in sentences(queries, seed=1) for n in QUERY_WORDS]
    return [*SINGLE, *cut]


def load(path: str, dtype: str) -> Runtime:
    """The model at float32, cast to ``dtype`` as ``auto`` serves it when that is not float32 (its
    short rows with float32 activations) whatever the guard would say of it here."""
    import torch

    model = ModelConfig(name="exactness", path=path, dtype="float32")
    runtime = load_runtime(model, resolve_model_path(path, ".state"), "cpu")
    if dtype != "float32":
        runtime.cast(getattr(torch, dtype), short_max_tokens=SHORT_MAX_TOKENS)  # type: ignore[attr-defined]
    return runtime


def serving(runtime: Runtime, way: str) -> Runtime:
    """``runtime`` (the reduced one) set to compute ``way``: its short rows apart or not."""
    runtime.short_max_tokens = SHORT_MAX_TOKENS if way == "served" else 0  # type: ignore[attr-defined]
    return runtime


def embed(runtime: Runtime, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, token lengths) of ``texts``, in length-sorted batches of ``BATCH``."""
    items = runtime.tokenize(list(texts), truncate=True)
    lengths = np.array([item.length for item in items])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(items), runtime.dim), dtype=np.float32)
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        out[rows] = runtime.forward([items[i] for i in rows])
    return out, lengths


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    a, b = reference.astype(np.float64), candidate.astype(np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def buckets(found: np.ndarray, lengths: np.ndarray) -> list[Bucket]:
    edges = [*BUCKETS, 1 << 30]
    out = []
    for low, high in zip(edges, edges[1:]):
        rows = found[(lengths >= low) & (lengths < high)]
        if len(rows):
            out.append(Bucket(low, high, len(rows), float(rows.mean()), float(rows.min()),
                              int((rows < MIN_ROW_COSINE).sum())))  # fmt: skip
    return out


def accuracy(reference: Runtime, reduced: Runtime, texts: Sequence[str]) -> dict[str, object]:
    """Per-row cosines of the reduced and served ways to float32, by length, and the worst rows."""
    exact, lengths = embed(reference, texts)
    report: dict[str, object] = {}
    for way in WAYS[1:]:
        found = cosines(exact, embed(serving(reduced, way), texts)[0])
        table = buckets(found, lengths)
        print(f"{way}: per-row cosine to float32 over {len(texts)} texts, by tokens")
        print("\n".join(f"  [{b.low:>3},{b.high if b.high < 1 << 30 else '':>4}) rows {b.rows:>5}  mean {b.mean:.6f}"
                        f"  lowest {b.lowest:.6f}  below {MIN_ROW_COSINE}: {b.below}" for b in table))  # fmt: skip
        worst = np.argsort(found)[:WORST]
        if way == "reduced":
            print("  worst rows: " + "; ".join(f"{found[i]:.6f} {lengths[i]} tok {texts[i][:30]!r}" for i in worst))
        report[way] = {"mean_cosine": float(found.mean()), "lowest_cosine": float(found.min()),
                       "rows_below": int((found < MIN_ROW_COSINE).sum()),
                       "longest_row_below_tokens": int(lengths[found < MIN_ROW_COSINE].max(initial=0)),
                       "by_tokens": {f"{b.low}": {"rows": b.rows, "mean_cosine": b.mean, "lowest_cosine": b.lowest,
                                                  "rows_below": b.below} for b in table}}  # fmt: skip
    return report


def speed(reference: Runtime, reduced: Runtime, workloads: dict[str, list[str]], seconds: float, rounds: int,
          threads: int) -> dict[str, object]:  # fmt: skip
    """Sentences/s of every way on every workload, interleaved round by round; medians over reduced's."""
    runs: dict[str, dict[str, list[float]]] = {w: {way: [] for way in WAYS} for w in workloads}
    for _ in range(rounds):
        for workload, texts in workloads.items():
            for way in WAYS:
                runtime = reference if way == "float32" else serving(reduced, way)
                point = measure(runtime, texts, batch=BATCH, order="sorted", threads=threads, seconds=seconds)
                runs[workload][way].append(point.sps)
    report: dict[str, object] = {}
    for workload, by_way in runs.items():
        median = {way: statistics.median(sps) for way, sps in by_way.items()}
        per_round = {way: [round(a / b, 3) for a, b in zip(sps, by_way["reduced"])] for way, sps in by_way.items()}
        report[workload] = {"sentences_per_s": {way: round(v, 1) for way, v in median.items()},
                            "over_reduced": {way: round(v / median["reduced"], 3) for way, v in median.items()},
                            "rounds_over_reduced": per_round}  # fmt: skip
        print(f"{workload}: " + ", ".join(f"{way} {median[way]:.1f} sent/s ({median[way] / median['reduced']:.2f}x "
                                          f"reduced)" for way in WAYS))  # fmt: skip
        print(f"  by round, over reduced: float32 {per_round['float32']}, served {per_round['served']}")
    return report


def main(argv: Sequence[str]) -> int:
    args = parse(argv)
    reference, reduced = load(args.model_path, "float32"), load(args.model_path, args.dtype)
    corpus, short = sentences(args.sentences), short_texts(args.queries)
    served = serving(reduced, "served")
    print(f"{args.dtype}; served: rows of up to {SHORT_MAX_TOKENS} tokens with float32 activations; "
          f"bound {MIN_ROW_COSINE}")
    texts = {"corpus": len(corpus), "probe": len(PROBE_TEXTS), "short": len(short)}
    summary: dict[str, object] = {"dtype": served.dtype, "short_max_tokens": SHORT_MAX_TOKENS,
                                  "min_row_cosine": MIN_ROW_COSINE, "cores": cores(), "threads": args.threads,
                                  "texts": texts}  # fmt: skip
    summary["accuracy"] = accuracy(reference, reduced, [*corpus, *PROBE_TEXTS, *short])
    summary["speed"] = speed(reference, reduced, {"corpus": corpus, "short": short}, args.seconds, args.rounds,
                             args.threads)
    serving(reduced, "served")
    print(json.dumps(summary))
    return 0
