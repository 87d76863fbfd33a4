"""bench/cpu_split.py: the split between two constructed snapshots (per request, shares, a worker
respawned mid-point, ``--url``), snapshots of real processes, and one short real
``python -m bench serve --cpu`` on the tiny model: its printed lines and every figure in its JSON."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import bench.serve as serve
from bench import cpu_split
from bench.cpu_split import Processes, Snapshot
from bench.points import Point

ROOT = Path(__file__).resolve().parents[2]
RUN_BOUND_S = 240

A, B, C = (101, 1000.0), (102, 1000.0), (103, 2000.0)  # (pid, start time): C starts inside the window


def snapshot(at: float, client: float, gateway: float | None, workers: dict[tuple[int, float], float], busy: float,
             idle: float, clock: float = 1500.0) -> Snapshot:  # fmt: skip
    return Snapshot(at, client, gateway, workers, busy, idle, clock)


def point(requests: int, scenario: str = "embed") -> Point:
    return Point(scenario, 1, 32, requests, 0, 10.0, requests / 10.0, requests / 10.0, 1.0, 2.0, 3.0)


def test_per_request_and_shares_of_the_cores() -> None:
    # 10 s on 2 cores: 20 CPU seconds, 19.5 of them busy
    before = snapshot(100.0, 1.0, 5.0, {A: 10.0, B: 20.0}, busy=500.0, idle=300.0)
    after = snapshot(110.0, 1.6, 6.0, {A: 18.0, B: 29.0}, busy=519.5, idle=300.5)
    split = cpu_split.between(before, after, requests=2000, cores=2)
    assert (split.wall_s, split.requests, split.cores) == (10.0, 2000, 2)
    assert split.client_us == pytest.approx(300.0) and split.gateway_us == pytest.approx(500.0)
    assert split.worker_us == pytest.approx((4000.0, 4500.0)) and split.workers_us == pytest.approx(8500.0)
    assert list(split.shares) == ["client", "gateway", "workers", "other", "idle"]
    assert split.shares == pytest.approx({"client": 0.03, "gateway": 0.05, "workers": 0.85, "other": 0.045,
                                          "idle": 0.025})  # fmt: skip
    assert sum(split.shares.values()) == pytest.approx(1.0)
    assert (split.vanished, split.appeared) == (0, 0)
    assert split.line() == ("  cpu: us per request: client 300, gateway 500, workers 8500 (4000, 4500); "
                            "shares of 2 cores: client 0.030, gateway 0.050, workers 0.850, other 0.045, idle 0.025")  # fmt: skip
    figures = split.figures()
    assert figures["worker_us"] == [4000.0, 4500.0] and figures["shares"]["workers"] == 0.85  # type: ignore[index]
    assert figures["vanished_workers"] == 0 and figures["gateway_us"] == 500.0


def test_a_worker_respawned_mid_point_counts_what_is_known_and_is_flagged() -> None:
    # B died inside the window (its CPU since `before` is unknown: under other); C replaced it and
    # every second of C's is inside the window
    before = snapshot(0.0, 0.0, 0.0, {A: 10.0, B: 20.0}, busy=0.0, idle=0.0)
    after = snapshot(10.0, 0.5, 1.0, {A: 15.0, C: 2.0}, busy=19.0, idle=1.0)
    split = cpu_split.between(before, after, requests=1000, cores=2)
    assert split.worker_us == pytest.approx((5000.0, 2000.0))  # A's delta, then C's whole life, by pid
    assert (split.vanished, split.appeared) == (1, 1)
    assert split.shares["workers"] == pytest.approx(0.35) and split.shares["other"] == pytest.approx(0.525)
    assert sum(split.shares.values()) == pytest.approx(1.0)
    assert "respawned: 1 worker(s) gone, 1 started inside" in split.line()
    assert split.figures()["appeared_workers"] == 1


def test_without_the_servers_pids_only_the_client_and_the_machine() -> None:
    before = snapshot(0.0, 2.0, None, {}, busy=100.0, idle=50.0)
    after = snapshot(5.0, 2.5, None, {}, busy=108.0, idle=52.0)
    split = cpu_split.between(before, after, requests=500, cores=2)
    assert split.gateway_us is None and not split.accounted
    assert split.shares == pytest.approx({"client": 0.05, "other": 0.75, "idle": 0.2})
    assert split.line() == "  cpu: us per request: client 1000; shares of 2 cores: client 0.050, other 0.750, idle 0.200"
    assert set(split.figures()) == {"wall_s", "requests", "cores", "client_us", "shares"}


def test_a_point_with_no_answers_or_no_machine_time_is_all_zeros_not_nan() -> None:
    same = snapshot(0.0, 1.0, 1.0, {A: 1.0}, busy=10.0, idle=10.0)
    split = cpu_split.between(same, same, requests=0, cores=2)
    assert split.client_us == 0.0 and split.worker_us == (0.0,)
    assert all(share == 0.0 for share in split.shares.values())


def test_a_vanished_pid_is_absent_from_a_real_snapshot() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        processes = Processes(psutil.Process(), psutil.Process(child.pid), lambda: [child.pid])
        before = cpu_split.take(processes)
        assert [pid for pid, _ in before.workers] == [child.pid] and before.gateway is not None
    finally:
        child.kill()
        child.wait(10)
    after = cpu_split.take(processes)  # the gateway and the worker gone: read as unknown, not an error
    assert after.workers == {} and after.gateway is None
    split = cpu_split.between(before, after, requests=10, cores=2)
    assert split.vanished == 1 and split.worker_us == () and split.gateway_us == 0.0


def test_the_window_snapshots_bound_the_measured_part_of_a_load() -> None:
    meter = cpu_split.Meter(cpu_split.processes_of(None))
    with meter.window(warmup=0.1, seconds=0.3) as window:
        end = time.monotonic() + 0.4
        while time.monotonic() < end:  # the load: this process busy
            pass
    assert window.before is not None and window.after is not None
    assert 0.25 < window.after.at - window.before.at < 0.45
    split = meter.split(window, point(100))
    assert split.client_us > 0 and split.shares["client"] > 0
    assert meter.records == [{"scenario": "embed", "batch": 1, "concurrency": 32, **split.figures()}]
    with meter.window(warmup=5.0, seconds=1.0) as early:
        pass  # a load that ended inside its warm-up measured nothing
    with pytest.raises(RuntimeError, match="ended before its measured window"):
        meter.split(early, point(1))


def test_with_url_serve_says_once_that_only_the_client_is_accounted(capsys: pytest.CaptureFixture[str]) -> None:
    args = serve.parse(["--url", "http://127.0.0.1:1", "--cpu"])
    meter = serve.cpu_meter(args, None)
    assert meter is not None and meter.processes.gateway is None and list(meter.processes.workers()) == []
    assert "no gateway or worker pids" in capsys.readouterr().out
    assert serve.cpu_meter(serve.parse(["--url", "http://127.0.0.1:1"]), None) is None  # no --cpu: no meter


@pytest.mark.slow
@pytest.mark.timeout(RUN_BOUND_S + 60)
def test_serve_cpu_prints_a_line_per_point_and_records_finite_figures(tiny_transformer: Path,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    argv = [sys.executable, "-m", "bench", "serve", "--quiet", "--results", str(tmp_path), "--model", "tiny",
            "--model-path", str(tiny_transformer), "--workers", "2", "--no-raw", "--scenarios", "throughput",
            "--batches", "1", "--concurrency", "4", "--rates", "40", "--seconds", "1", "--warmup", "0.3",
            "--cpu"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("  cpu: ")]
    assert len(lines) == 2, done.stdout  # the closed loop at c=4, then the open loop at 40/s
    for line in lines:
        assert "us per request: client " in line and ", gateway " in line and ", workers " in line
        assert "shares of " in line and "idle " in line
    records = json.loads(done.stdout.strip().splitlines()[-1])["cpu"]
    assert [(r["scenario"], r["concurrency"]) for r in records] == [("embed", 4), ("open@40", 0)]
    for record in records:
        assert record["requests"] > 0 and len(record["worker_us"]) == 2
        assert record["client_us"] > 0 and record["gateway_us"] > 0 and record["workers_us"] > 0
        assert sum(record["shares"].values()) == pytest.approx(1.0, abs=0.1)
    (folder,) = tmp_path.iterdir()
    figures = json.loads((folder / "results.json").read_text())["figures"]
    cpu = {name: entry for name, entry in figures.items() if name.startswith("cpu[")}
    assert "cpu[scenario=embed/batch=1/concurrency=4].gateway_us" in cpu
    assert all(math.isfinite(entry["value"]) for entry in cpu.values()), cpu
