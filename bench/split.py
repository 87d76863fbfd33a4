"""`python -m bench split`: the batcher's pass split against whole batches, on the real model in process.

One worker's serving cycle without the HTTP and ring around it: ``--clients`` closed-loop clients
each keep one single-sentence request queued or computing (the share of one worker at c=32 over
two workers), the real ``Batcher`` forms each batch and the real runtime computes it on
``--threads`` threads (a worker pinned to one core: 1), and every finished client sends its next
sentence from the bench corpus at once. Two policies, the only difference being the batcher's
``split_passes``: ``whole`` (the default: the block is one batch, which the runtime cuts into its
cheapest passes at forward time) and ``split`` (only the anchor's pass runs, the rest stays
queued).

The policies alternate for ``--rounds`` rounds of ``--seconds`` each, so both see the same noise;
the figure is split's sentences/s over whole's per round, with the padding ratio (padded over
real tokens) of the batches as formed and of the passes computed (the batcher's count) and the
mean batch of each. Last line: one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import msgspec

from appliance.config import ModelConfig, resolve_model_path
from bench.corpus import sentences
from bench.target import MODEL, MODEL_PATH
from workers.batcher import Batcher
from workers.runtimes import Runtime, Tokenized, load_runtime

POLICIES = ("whole", "split")
MAX_BATCH_TOKENS, MAX_BATCH_SIZE = 16384, 128  # the config's defaults (appliance.config)


@dataclass(frozen=True, slots=True)
class Round:
    policy: str
    round: int
    sentences_per_s: float
    padding_ratio: float  # padded over real tokens of the batches as formed (rows x longest)
    computed_padding_ratio: float  # the same of the passes the runtime ran (it cuts a batch)
    inputs_per_batch: float


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench split", description=__doc__.splitlines()[0])
    p.add_argument("--model-path", default=MODEL_PATH, help="the model's directory or package: ref")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--clients", type=int, default=16, help="closed-loop clients of the one worker")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a worker pinned to one core: 1)")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds per policy and round")
    p.add_argument("--rounds", type=int, default=3)
    return p.parse_args(list(argv))


def load(args: argparse.Namespace) -> Runtime:
    model = msgspec.convert({"name": MODEL, "path": args.model_path, "dtype": args.dtype}, ModelConfig)
    runtime = load_runtime(model, resolve_model_path(model.path, ".state"), "cpu")
    runtime.warmup()  # measures the pass overhead the split uses
    return runtime


def closed_loop(runtime: Runtime, items: Iterator[Tokenized], batcher: Batcher, clients: int,
                seconds: float) -> tuple[int, int, int]:  # fmt: skip
    """(sentences finished, inputs computed, padded tokens of the batches as formed) in ``seconds``
    by ``clients`` clients, each resending as soon as it is answered."""
    keys = itertools.count()

    def send() -> None:
        item = next(items)
        batcher.add(next(keys), [item.length], [item])

    for _ in range(clients):
        send()
    done, computed, formed, deadline = 0, 0, 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        batch = batcher.next_batch()
        assert batch is not None, "a closed loop always has work queued"
        computed += len(batch)
        formed += len(batch) * max(batch.lengths)
        for _ in batcher.complete(batch, runtime.forward(batch.payloads)):
            done += 1
            send()
    return done, computed, formed


def measure(runtime: Runtime, items: Iterator[Tokenized], policy: str, args: argparse.Namespace,
            n: int) -> Round:  # fmt: skip
    batcher = Batcher(MAX_BATCH_TOKENS, MAX_BATCH_SIZE, overhead_tokens=getattr(runtime, "overhead_tokens", None),
                      split_passes=policy == "split")  # fmt: skip
    done, computed, formed = closed_loop(runtime, items, batcher, args.clients, args.seconds)
    real = batcher.real_tokens  # the batcher counts the passes the runtime computes (padded_tokens)
    return Round(policy, n, round(done / args.seconds, 1), round(formed / real, 3),
                 round(batcher.padded_tokens / real, 3), round(computed / batcher.batches, 2))  # fmt: skip


def main(argv: Sequence[str]) -> int:
    import torch

    args = parse(argv)
    torch.set_num_threads(args.threads)
    runtime = load(args)
    items = itertools.cycle(runtime.tokenize(sentences(4000), truncate=True))
    print(f"{MODEL} ({runtime.dtype}, {args.threads} thread(s)), {args.clients} clients, pass overhead "
          f"{getattr(runtime, 'overhead_tokens', 0):.0f} padded tokens", flush=True)  # fmt: skip
    rounds: list[Round] = []
    for n in range(args.rounds):
        for policy in POLICIES if n % 2 == 0 else POLICIES[::-1]:  # alternate who goes first
            rounds.append(measure(runtime, items, policy, args, n))
            r = rounds[-1]
            print(f"round {n} {policy:<6}{r.sentences_per_s:>8.1f} sentences/s  padding {r.padding_ratio:.2f}x "
                  f"batched, {r.computed_padding_ratio:.2f}x computed  {r.inputs_per_batch:.1f} inputs/batch",
                  flush=True)  # fmt: skip
    ratios = [split.sentences_per_s / whole.sentences_per_s for whole, split in pairs(rounds)]
    print(f"split over whole: {statistics.median(ratios):.3f}x (rounds: {', '.join(f'{r:.3f}' for r in ratios)})")
    print(json.dumps({"model": MODEL, "dtype": runtime.dtype, "threads": args.threads, "clients": args.clients,
                      "overhead_tokens": round(float(getattr(runtime, "overhead_tokens", 0)), 1),
                      "split_over_whole": round(statistics.median(ratios), 3),
                      "round_ratios": [round(r, 3) for r in ratios],
                      "rounds": [asdict(r) for r in rounds]}))  # fmt: skip
    return 0


def pairs(rounds: list[Round]) -> Iterator[tuple[Round, Round]]:
    """(whole, split) of each round."""
    for n in sorted({r.round for r in rounds}):
        by = {r.policy: r for r in rounds if r.round == n}
        yield by["whole"], by["split"]
