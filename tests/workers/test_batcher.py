"""workers/batcher.py: token budget, result order, padding saved by sorting, the split of a block
into passes, fairness, priority classes and pace, cancel/fail, max_wait_us with an injected clock,
and the start-up budget check.

The worker loop is simulated: ``Loop`` adds requests when their arrival step comes, takes the
next batch, "runs" it with a fake forward that encodes (request, item) in every output row, and
completes it; so every assertion about order checks the rows that really came back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.protocol import BACKGROUND, INTERACTIVE
from workers.batcher import OLDEST_EVERY, PACE_S, Batch, Batcher, check_budget
from workers.runtimes.chunking import MAX_OVERHEAD_TOKENS, plan_chunks

SEED = 20240611


def fake_forward(batch: Batch, ids: dict[object, int]) -> np.ndarray:
    """(n, 3) rows: request id, item index, length; stands in for a model's (n, dim) vectors."""
    return np.array([[ids[k], i, n] for k, i, n in zip(batch.keys, batch.indices, batch.lengths)], dtype=np.float32)


# step -> requests that arrive before it: (key, lengths) or (key, lengths, priority)
Arrivals = dict[int, list[tuple[object, list[int]] | tuple[object, list[int], int]]]


@dataclass
class Loop:
    """The worker loop's use of a batcher: arrivals between batches, one batch at a time."""

    batcher: Batcher
    arrivals: Arrivals
    ids: dict[object, int] = field(default_factory=dict)
    lengths: dict[object, list[int]] = field(default_factory=dict)
    finished: dict[object, int] = field(default_factory=dict)  # key -> step its last item finished
    batches: list[Batch] = field(default_factory=list)

    def run(self, max_steps: int = 100_000) -> None:
        step = 0
        while step <= max(self.arrivals, default=0) or self.batcher.pending_items:
            assert step < max_steps, "the batcher did not drain"  # never loop forever
            for key, lengths, *priority in self.arrivals.get(step, []):
                self.add(key, lengths, *priority)
            self.step(step)
            step += 1

    def add(self, key: object, lengths: list[int], priority: int = INTERACTIVE) -> None:
        self.ids[key] = len(self.ids)
        self.lengths[key] = lengths
        self.batcher.add(key, lengths, [(key, i) for i in range(len(lengths))], priority=priority)

    def step(self, step: int) -> None:
        batch = self.batcher.next_batch()
        if batch is None:
            return
        self.batches.append(batch)
        for key, result in self.batcher.complete(batch, fake_forward(batch, self.ids)):
            assert key not in self.finished, f"{key!r} finished twice"
            self.finished[key] = step
            self.check_result(key, result)

    def check_result(self, key: object, result: np.ndarray) -> None:
        n = len(self.lengths[key])
        assert result.shape == (n, 3)
        assert (result[:, 0] == self.ids[key]).all()
        assert result[:, 1].tolist() == list(range(n)), "rows not in the request's input order"
        assert result[:, 2].tolist() == self.lengths[key]


def realistic_lengths(rng: np.random.Generator, n: int) -> list[int]:
    """Token counts of search/RAG texts: log-normal, median ~40, long tail cut at 512."""
    return np.clip(rng.lognormal(3.7, 0.7, n).astype(int), 3, 512).tolist()


def real_tokens(batch: Batch) -> int:
    return sum(batch.lengths)


def passes_padded_tokens(lengths: list[int], overhead: float | None) -> int:
    """What the runtime computes: rows x longest of each pass forward_in_chunks cuts the batch into."""
    if overhead is None or len(lengths) < 2:
        return len(lengths) * max(lengths)
    return sum(len(chunk) * max(lengths[i] for i in chunk) for chunk in plan_chunks(lengths, overhead))


def budget_ok(batch: Batch, batcher: Batcher) -> bool:
    widest = max(max(1, n) for n in batch.lengths)
    return len(batch) <= batcher.max_batch_size and len(batch) * widest <= batcher.max_batch_tokens


# ---- token budget ----------------------------------------------------------------------------
@st.composite
def workloads(draw: st.DrawFn) -> tuple[Batcher, Arrivals]:
    budget = draw(st.integers(1, 2048))
    size = draw(st.integers(1, 64))
    batcher = Batcher(budget, size, chunk_items=draw(st.none() | st.integers(1, 16)),
                      lookahead=draw(st.none() | st.integers(1, 128)),
                      sort_by_length=draw(st.booleans()),
                      overhead_tokens=draw(st.none() | st.floats(1, 512)),
                      split_passes=draw(st.booleans()))  # fmt: skip
    arrivals: Arrivals = {}
    for key in range(draw(st.integers(1, 12))):
        lengths = draw(st.lists(st.integers(0, budget), min_size=1, max_size=40))
        priority = draw(st.sampled_from([INTERACTIVE, BACKGROUND]))
        arrivals.setdefault(draw(st.integers(0, 6)), []).append((key, lengths, priority))
    return batcher, arrivals


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_budget_is_never_exceeded_and_every_request_completes_in_order(workload: tuple[Batcher, Arrivals]) -> None:
    batcher, arrivals = workload
    loop = Loop(batcher, arrivals)
    loop.run()
    for batch in loop.batches:
        assert budget_ok(batch, batcher), (batch.lengths, batcher.max_batch_tokens, batcher.max_batch_size)
        assert batch.padded_tokens == passes_padded_tokens(batch.lengths, batcher.overhead_tokens)
        assert real_tokens(batch) <= batch.padded_tokens <= len(batch) * max(batch.lengths)
    assert set(loop.finished) == set(loop.lengths)  # check_result ran for each: order, shape, values
    total = sum(map(len, loop.lengths.values()))
    assert sum(len(b) for b in loop.batches) == total  # each item computed exactly once
    assert batcher.real_tokens == sum(map(sum, loop.lengths.values()))
    assert batcher.padded_tokens == sum(b.padded_tokens for b in loop.batches)
    assert batcher.pending_items == 0 and batcher.pending_requests == 0


def test_batch_closes_on_rows_and_on_padded_tokens() -> None:
    by_rows = Batcher(10_000, 4)
    by_rows.add("a", [10] * 9, list(range(9)))
    assert [len(by_rows.next_batch() or []) for _ in range(4)] == [4, 4, 1, 0]

    by_tokens = Batcher(100, 64)
    by_tokens.add("a", [10] * 12 + [50, 50, 50], list(range(15)))
    sizes = []
    while (batch := by_tokens.next_batch()) is not None:
        sizes.append((len(batch), batch.padded_tokens))
    assert sizes == [(10, 100), (2, 20), (2, 100), (1, 50)]


def test_one_dimensional_outputs_come_back_in_input_order() -> None:
    """A cross-encoder returns one score per item: (n,) rows."""
    batcher = Batcher(64, 3)
    lengths = [30, 5, 20, 5, 60, 10, 1]
    batcher.add("pairs", lengths, list(range(len(lengths))))
    result = None
    while (batch := batcher.next_batch()) is not None:
        scores = np.array([float(p) for p in batch.payloads], dtype=np.float32)  # type: ignore[arg-type]
        for key, result in batcher.complete(batch, scores):
            assert key == "pairs"
    assert result is not None and result.shape == (7,)
    assert result.tolist() == list(range(7))


# ---- padding saved by sorting ----------------------------------------------------------------
def mixed_traffic(seed: int) -> Arrivals:
    """60 requests of 1..1,024 texts, three arriving per batch step."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([1, 1, 2, 4, 8, 16, 32, 64, 256, 1024], size=60)
    requests = [(f"r{i}", realistic_lengths(rng, int(n))) for i, n in enumerate(sizes)]
    return {step: requests[3 * step : 3 * step + 3] for step in range(20)}


@pytest.mark.parametrize(("budget", "size"), [(16_384, 128), (4_096, 64)])
def test_sorting_by_length_cuts_padding(budget: int, size: int) -> None:
    runs = {}
    for sort in (True, False):
        loop = Loop(Batcher(budget, size, sort_by_length=sort), mixed_traffic(SEED))
        loop.run()
        runs[sort] = loop.batcher
    real = runs[True].real_tokens
    assert runs[False].real_tokens == real
    ratio = {sort: b.padded_tokens / real for sort, b in runs.items()}
    print(f"\nbudget {budget} tokens x {size} rows, {real} real tokens: padded/real "
          f"{ratio[False]:.2f} in arrival order ({runs[False].batches} batches) -> "
          f"{ratio[True]:.2f} sorted ({runs[True].batches} batches), "
          f"{1 - runs[True].padded_tokens / runs[False].padded_tokens:.0%} fewer padded tokens")  # fmt: skip
    assert runs[True].padded_tokens < 0.5 * runs[False].padded_tokens
    assert ratio[True] < 1.6
    assert runs[True].batches < runs[False].batches


# ---- passes: what a batch computes, and the opt-in split --------------------------------------
def test_padded_tokens_count_the_passes_the_runtime_computes() -> None:
    """The runtime runs [10]*7 and [90] as two passes (20 + 70 and 20 + 90 < 20 + 720): the
    batch counts 160 padded tokens, not 8 x 90; without an overhead, or on a GPU, one pass."""
    lengths = [10, 10, 10, 10, 90, 10, 10, 10]
    for overhead, padded in ((20.0, 7 * 10 + 90), (None, 8 * 90), (float(MAX_OVERHEAD_TOKENS), 8 * 90)):
        batcher = Batcher(16_384, 128, overhead_tokens=overhead)
        batcher.add("r", lengths, list(range(8)))
        batch = batcher.next_batch()
        assert batch is not None and len(batch) == 8 and batch.padded_tokens == padded, overhead
        assert batcher.padded_tokens == padded and batcher.real_tokens == 160


def test_no_split_unless_asked() -> None:
    loop = Loop(Batcher(16_384, 128, overhead_tokens=20.0), single_texts([10, 10, 90]))
    loop.run()
    assert batch_lengths(loop) == [[10, 10, 90]]

def single_texts(lengths: list[int]) -> Arrivals:
    """One single-text request per length, all queued before the first batch, in this order."""
    return {0: [(f"r{i}", [n]) for i, n in enumerate(lengths)]}


def batch_lengths(loop: Loop) -> list[list[int]]:
    return [sorted(b.lengths) for b in loop.batches]


def test_a_long_item_waits_one_pass_instead_of_padding_the_short_ones() -> None:
    # one pass: 8 x 90 = 720 padded tokens; two: 20 + 7 x 10 and 20 + 90 = 200
    lengths = [10, 10, 10, 10, 90, 10, 10, 10]
    for overhead, expected in ((20.0, [[10] * 7, [90]]), (None, [sorted(lengths)])):
        loop = Loop(Batcher(16_384, 128, overhead_tokens=overhead, split_passes=True), single_texts(lengths))
        loop.run()
        assert batch_lengths(loop) == expected, overhead
        assert set(loop.finished) == set(loop.lengths)  # check_result ran for each


def test_the_anchor_runs_first_even_when_it_is_the_long_item() -> None:
    loop = Loop(Batcher(16_384, 128, overhead_tokens=20.0, split_passes=True), single_texts([90, 10, 10, 10, 10, 10]))
    loop.run()
    assert batch_lengths(loop) == [[90], [10] * 5]
    assert loop.finished["r0"] == 0


def test_items_left_queued_are_pooled_with_later_arrivals_of_their_length() -> None:
    arrivals = single_texts([10, 10, 10, 10, 88])
    arrivals[1] = [("late0", [90]), ("late1", [87]), ("late2", [12])]
    loop = Loop(Batcher(16_384, 128, overhead_tokens=20.0, split_passes=True), arrivals)
    loop.run()
    # the 88-token item, left behind by the first pass, runs with the long late arrivals
    assert batch_lengths(loop) == [[10] * 4, [87, 88, 90], [12]]


def test_an_item_is_left_behind_at_most_once() -> None:
    """Each length its own cheapest pass; unbounded, the 90-token text would wait for four passes
    of older texts. Left behind once, it runs in the next batch with everything then queued."""
    loop = Loop(Batcher(16_384, 128, overhead_tokens=5.0, split_passes=True), single_texts([10, 30, 50, 70, 90]))
    loop.run()
    assert batch_lengths(loop) == [[10], [30, 50, 70, 90]]


def test_no_split_when_the_padding_saved_is_less_than_a_pass() -> None:
    lengths = [10, 12, 14, 16]  # 64 padded, 52 real: 12 tokens of padding < 20 per pass
    loop = Loop(Batcher(16_384, 128, overhead_tokens=20.0, split_passes=True), single_texts(lengths))
    loop.run()
    assert batch_lengths(loop) == [lengths]


def test_no_split_where_padding_is_as_cheap_as_a_pass() -> None:
    """A GPU runtime reports MAX_OVERHEAD_TOKENS: its batches are never split."""
    lengths = [10, 10, 10, 500]
    gpu = Batcher(16_384, 128, overhead_tokens=float(MAX_OVERHEAD_TOKENS), split_passes=True)
    loop = Loop(gpu, single_texts(lengths))
    loop.run()
    assert batch_lengths(loop) == [lengths]


def test_a_split_interactive_batch_takes_no_background_fill() -> None:
    arrivals: Arrivals = {0: [("bg", [10], BACKGROUND), ("a", [10]), ("b", [10]), ("c", [90])]}
    loop = Loop(Batcher(16_384, 128, overhead_tokens=20.0, split_passes=True), arrivals)
    loop.run()
    assert [b.keys for b in loop.batches] == [["a", "b"], ["c", "bg"]]  # bg fills the unsplit one


# ---- fairness --------------------------------------------------------------------------------
@pytest.mark.parametrize("priority", [INTERACTIVE, BACKGROUND])
@pytest.mark.parametrize("small_length", [12, 40, 500])
def test_small_request_after_a_big_one_finishes_first(small_length: int, priority: int) -> None:
    """A 1-text request queued right behind 2,048 texts is served within a few batches, even when
    its text is longer than any of the big request's (length sorting alone would defer it); the
    same within either priority class."""
    rng = np.random.default_rng(SEED)
    big = np.clip(rng.lognormal(3.0, 0.5, 2048).astype(int), 3, 200).tolist()
    loop = Loop(Batcher(16_384, 128), {0: [("big", big, priority)], 1: [("small", [small_length], priority)]})
    loop.run()
    print(f"\nsmall ({small_length} tokens) done at batch {loop.finished['small']}, "
          f"big at batch {loop.finished['big']}")
    assert loop.finished["small"] < loop.finished["big"]
    assert loop.finished["small"] <= 3  # arrived before batch 1; served at its turn


def test_a_long_item_is_not_starved_by_a_stream_of_short_ones() -> None:
    rng = np.random.default_rng(SEED)
    arrivals: Arrivals = {step: [(f"short{step}", rng.integers(4, 12, 64).tolist())] for step in range(200)}
    arrivals[5].append(("long", [480, 9, 7]))
    loop = Loop(Batcher(4_096, 64), arrivals)
    loop.run()
    print(f"\nlong request arrived before batch 5, done at batch {loop.finished['long']}")
    # The stream drains as fast as it arrives, so only a request or two ever take turns ahead of
    # it; a shortest-first batcher would hold the 480-token item until the stream stops (batch 200).
    assert loop.finished["long"] - 5 <= 4


@pytest.mark.parametrize("priority", [INTERACTIVE, BACKGROUND])
def test_equal_requests_finish_one_after_the_other_in_arrival_order(priority: int) -> None:
    """Shortest remaining first, ties by arrival: three equal requests do not share the batches
    round-robin (which would finish all three at the very end) but finish a, then b, then c."""
    batcher = Batcher(10_000, 8, chunk_items=8, lookahead=8)
    loop = Loop(batcher, {0: [(key, [10] * 40, priority) for key in "abc"]})
    loop.run()
    owners = [set(batch.keys) for batch in loop.batches]
    assert owners == [{"a"}] * 5 + [{"b"}] * 5 + [{"c"}] * 5
    assert [loop.finished[k] for k in "abc"] == [4, 9, 14]


@pytest.mark.parametrize("priority", [INTERACTIVE, BACKGROUND])
def test_a_big_request_progresses_under_a_stream_of_full_batches(priority: int) -> None:
    """A 640-item request among 64-item requests arriving one per batch: shortest-first alone
    would hold it until the stream stops (batch 200); every OLDEST_EVERY-th batch is its own.
    Within either class: each class counts its own batches for the oldest turn."""
    arrivals: Arrivals = {step: [(f"small{step}", [10] * 64, priority)] for step in range(200)}
    arrivals[5].append(("big", [10] * 640, priority))
    loop = Loop(Batcher(4_096, 64), arrivals)
    loop.run()
    print(f"\nbig request arrived before batch 5, done at batch {loop.finished['big']}")
    assert loop.finished["big"] - 5 <= OLDEST_EVERY * 10 + OLDEST_EVERY  # 10 batches of its own
    waits = [loop.finished[f"small{step}"] - step for step in range(200)]
    assert max(waits) <= 200 // OLDEST_EVERY  # the stream is slowed by a quarter, not stopped


# ---- priority classes ------------------------------------------------------------------------
def test_interactive_items_are_batched_before_background_ones_queued_earlier() -> None:
    """A 200-item interactive request arriving behind a 100-item job: fewest-queued-first alone
    would finish the job first (it has fewer items left); priority runs every interactive item
    first, and the job only fills the room of the last interactive batch."""
    loop = Loop(Batcher(4_096, 64), {0: [("job", [10] * 100, BACKGROUND)], 1: [("q", [10] * 200)]})
    loop.run()
    owners = [set(batch.keys) for batch in loop.batches]
    assert owners[:4] == [{"job"}, {"q"}, {"q"}, {"q"}]  # the job ran only while nothing else waited
    assert owners[4] == {"q", "job"} and loop.batches[4].keys.count("q") == 8  # q's last 8, then fill
    assert loop.finished["q"] == 4 < loop.finished["job"]


def test_background_fills_only_the_room_left_up_to_twice_the_interactive_tokens() -> None:
    batcher = Batcher(1_000, 8)
    batcher.add("job", [30, 12, 8, 5], ["j30", "j12", "j8", "j5"], priority=BACKGROUND)
    batcher.add("q", [10, 10], ["q0", "q1"])
    first = batcher.next_batch()
    # the interactive block (2 x 10 = 20 padded tokens), then the job's shortest while the batch
    # stays within 40: 5 and 8 fit under the 10-token rows; 12 would make it 5 x 12 = 60
    assert first is not None and first.payloads == ["q0", "q1", "j5", "j8"] and first.padded_tokens == 40

    full = Batcher(1_000, 8)
    full.add("job", [5] * 4, ["j"] * 4, priority=BACKGROUND)
    full.add("q", [10] * 12, ["q"] * 12)
    # no fill while interactive items remain queued: 8 rows of q, then q's last 4 and the job's 4
    assert [b.payloads for b in (full.next_batch(), full.next_batch())] == [["q"] * 8, ["q"] * 4 + ["j"] * 4]


def test_interactive_order_is_undisturbed_by_queued_background_work() -> None:
    batcher = Batcher(10_000, 8, chunk_items=8, lookahead=8)
    loop = Loop(batcher, {0: [("job", [10] * 16, BACKGROUND), *((key, [10] * 40) for key in "abc")]})
    loop.run()
    owners = [set(batch.keys) for batch in loop.batches]
    assert owners == [{"a"}] * 5 + [{"b"}] * 5 + [{"c"}] * 5 + [{"job"}] * 2


def test_background_batches_keep_to_the_interactive_pace_then_use_the_whole_budget() -> None:
    clock = FakeClock()
    batcher = Batcher(1_000, 64, clock=clock)
    batcher.add("job", [10] * 200, ["j"] * 200, priority=BACKGROUND)
    batcher.add("q", [10, 10, 10], ["q"] * 3)
    assert batcher.urgency == INTERACTIVE
    first = batcher.next_batch()  # q's 3 rows (30 tokens) and 3 of the job's in the room left
    assert first is not None and first.payloads == ["q"] * 3 + ["j"] * 3
    assert batcher.urgency == BACKGROUND
    clock.ns += int(PACE_S * 1e9) - 1
    paced = batcher.next_batch()  # soon after an interactive batch: no bigger than its 30 tokens
    assert paced is not None and paced.padded_tokens == 30
    clock.ns += 1
    whole = batcher.next_batch()  # PACE_S later: the whole budget again
    assert whole is not None and whole.padded_tokens == 640  # 64 rows x 10
    assert batcher.next_batch() is not None and batcher.urgency == BACKGROUND


def test_a_paced_background_batch_still_takes_its_anchor() -> None:
    """Paced to one 4-token interactive row, a 300-token background item still runs alone."""
    clock = FakeClock()
    batcher = Batcher(1_000, 8, clock=clock)
    batcher.add("q", [4], ["q"])
    assert batcher.next_batch() is not None
    batcher.add("job", [300, 300], ["j0", "j1"], priority=BACKGROUND)
    batch = batcher.next_batch()
    assert batch is not None and batch.payloads == ["j0"]


# ---- cancel / fail_batch ---------------------------------------------------------------------
def test_cancel_drops_queued_items_and_ignores_those_in_flight() -> None:
    batcher = Batcher(1_000, 4)
    batcher.add("a", [10] * 6, list(range(6)))
    batcher.add("b", [10] * 8, list(range(8)))  # more items than a: a goes first
    first = batcher.next_batch()
    assert first is not None and set(first.keys) == {"a"}
    assert batcher.cancel("a") == 2  # 4 in flight, 2 still queued
    assert batcher.cancel("a") == 0 and batcher.cancel("never-added") == 0
    assert batcher.pending_items == 8 and batcher.pending_requests == 1
    batcher.add("a", [10], ["new a"])  # the key may be reused at once
    assert batcher.complete(first, np.zeros((4, 2))) == []  # the old "a" is gone; the new one waits
    done = []
    while (batch := batcher.next_batch()) is not None:
        done += batcher.complete(batch, np.ones((len(batch), 2)))
    assert sorted(k for k, _ in done) == ["a", "b"]
    assert dict(done)["a"].shape == (1, 2) and (dict(done)["a"] == 1).all()


def test_fail_batch_fails_exactly_the_requests_it_held() -> None:
    batcher = Batcher(1_000, 4)
    batcher.add("a", [5, 50], [0, 1])
    batcher.add("b", [5], [0])
    batcher.add("c", [60, 60, 60, 60, 60], [0, 1, 2, 3, 4])
    batcher.add("d", [400, 400], [0, 1])  # longer than everything: not in the first batch
    batch = batcher.next_batch()
    assert batch is not None and batch.keys == ["b", "a", "a", "c"]  # shortest first: 5, 5, 50, 60
    assert batcher.fail_batch(batch) == ["b", "a", "c"]
    assert batcher.pending_requests == 1 and batcher.pending_items == 2  # c's other four are dropped
    rest = batcher.next_batch()
    assert rest is not None and rest.keys == ["d", "d"]
    assert [k for k, _ in batcher.complete(rest, np.zeros((2, 1)))] == ["d"]
    with pytest.raises(ValueError, match="already"):
        batcher.complete(batch, np.zeros((len(batch), 1)))


def test_complete_refuses_outputs_of_the_wrong_length() -> None:
    batcher = Batcher(100, 8)
    batcher.add("a", [3, 3], [0, 1])
    batch = batcher.next_batch()
    assert batch is not None
    with pytest.raises(ValueError, match="2 batch items"):
        batcher.complete(batch, np.zeros((3, 4)))


# ---- max_wait_us -----------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns


def test_no_wait_by_default() -> None:
    batcher = Batcher(1_000, 8)
    assert batcher.next_batch() is None and batcher.wait_hint_s() is None
    batcher.add("a", [5], [0])
    assert batcher.wait_hint_s() is None
    assert batcher.next_batch() is not None


def test_max_wait_holds_a_batch_that_could_still_grow() -> None:
    clock = FakeClock()
    batcher = Batcher(1_000, 8, max_wait_us=2_000, clock=clock)
    batcher.add("a", [5, 5], [0, 1])
    clock.ns += 500_000
    assert batcher.next_batch() is None
    assert batcher.wait_hint_s() == pytest.approx(0.0015)
    batcher.add("b", [5], [0])  # a later arrival does not restart the oldest item's wait
    clock.ns += 1_400_000
    assert batcher.next_batch() is None
    assert batcher.wait_hint_s() == pytest.approx(0.0001)
    clock.ns += 100_000
    batch = batcher.next_batch()
    assert batch is not None and len(batch) == 3
    assert batcher.next_batch() is None and batcher.wait_hint_s() is None


def test_max_wait_does_not_hold_a_full_batch() -> None:
    clock = FakeClock()
    by_rows = Batcher(1_000, 4, max_wait_us=10_000, clock=clock)
    by_rows.add("a", [5] * 4, [0] * 4)
    assert by_rows.wait_hint_s() == 0.0
    assert by_rows.next_batch() is not None

    by_tokens = Batcher(100, 64, max_wait_us=10_000, clock=clock)
    by_tokens.add("a", [40, 40, 40], [0] * 3)  # two rows fill the budget: the batch is closed
    first = by_tokens.next_batch()
    assert first is not None and len(first) == 2
    assert by_tokens.next_batch(now_ns=clock.ns + 9_999_000) is None  # the leftover row may wait ...
    assert by_tokens.next_batch(now_ns=clock.ns + 10_000_000) is not None  # ... until max_wait_us


# ---- start-up and input checks ---------------------------------------------------------------
def test_check_budget_refuses_a_budget_below_the_max_length() -> None:
    check_budget(512, 512)
    check_budget(16_384, 512)
    with pytest.raises(ValueError, match=r"max_batch_tokens = 256 cannot hold one input .*\(512 tokens\)"):
        check_budget(256, 512)
    with pytest.raises(ValueError, match="at least 1"):
        check_budget(256, 0)


def test_add_refuses_what_could_never_run_and_queues_nothing() -> None:
    batcher = Batcher(100, 8)
    with pytest.raises(ValueError, match="item 1: 101 tokens cannot fit"):
        batcher.add("a", [10, 101], [0, 1])
    with pytest.raises(ValueError, match="at least one item"):
        batcher.add("b", [], [])
    with pytest.raises(ValueError, match="2 lengths for 1 payloads"):
        batcher.add("c", [1, 2], [0])
    assert batcher.pending_items == 0 and batcher.pending_requests == 0
    batcher.add("d", [100], [0])
    with pytest.raises(ValueError, match="already queued"):
        batcher.add("d", [1], [0])
    batch = batcher.next_batch()
    assert batch is not None and batch.padded_tokens == 100
