"""Shared pieces of the benchmarks: timing, percentiles and the figures of one run."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def timed_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> list[float]:
    """Wall time of `runs` calls of fn, in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def end(proc: subprocess.Popen) -> None:
    """Stop a child process: terminate, then kill if it has not gone within 5 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Figure:
    """One measured figure, the baseline it is compared with, and its target if it has one."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""  # e.g. "<= 2" (value) or "ratio <= 0.5"
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict:
        return {
            "value": round(self.value, 4),
            "unit": self.unit,
            "baseline": None if self.baseline is None else round(self.baseline, 4),
            "baseline_name": self.baseline_name,
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Results:
    figures: dict[str, Figure] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        baseline: float | None = None,
        baseline_name: str = "",
        target: str = "",
        met: bool | None = None,
        note: str = "",
    ) -> Figure:
        figure = Figure(name, value, unit, baseline, baseline_name, target, met, note)
        self.figures[name] = figure
        print("  " + row(figure), flush=True)
        return figure


def check(value: float, op: str, limit: float) -> bool:
    return value <= limit if op == "<=" else value >= limit


def row(f: Figure) -> str:
    ratio = "" if f.ratio is None else f"{f.ratio:9.3f}"
    base = "" if f.baseline is None else f"{f.baseline:12.3f}"
    met = {True: "met", False: "MISSED", None: ""}[f.met]
    return f"{f.name:48s} {f.value:12.3f} {f.unit:8s} {base:>12s} {ratio:>9s}  {f.target:16s} {met}"


def table(results: Results) -> str:
    head = (
        f"{'figure':48s} {'value':>12s} {'unit':8s} {'baseline':>12s} {'ratio':>9s}  "
        f"{'target':16s} met"
    )
    lines = [head, "-" * len(head)]
    lines += [row(f) for f in results.figures.values()]
    baselines = sorted({f.baseline_name for f in results.figures.values() if f.baseline_name})
    lines.append("")
    lines.append("baselines: " + "; ".join(baselines))
    return "\n".join(lines)
