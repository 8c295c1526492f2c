"""Drift detectors on synthetic streams: false alarms, detection delay and µs/update.

Compares Page-Hinkley with a fixed threshold, Page-Hinkley with the adaptive threshold and
ADWIN on seeded Gaussian and Bernoulli (hit/miss) streams, and times ours against river's
implementations on the same stream in the same run.

    .venv/bin/python benchmarks/bench_drift_detectors.py [--events 100000] [--trials 30]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from river import drift

from operators import ADWIN, PageHinkley


class Detector(Protocol):
    def update(self, x: float) -> bool | None: ...


DETECTORS: dict[str, Callable[[], Detector]] = {
    "PH fixed (threshold=50)": PageHinkley,
    # 100 x sigma equals the fixed threshold 50 on a stream of spread 0.5 (a fair hit/miss).
    "PH adaptive (lambda_factor=100)": lambda: PageHinkley(lambda_factor=100.0),
    # The rule GlobalRecalibration uses with detector="page_hinkley": threshold 50 sigma, a
    # tolerance of 0.1 and no fading (alpha < 1 turns the sum into an AR(1) whose spread,
    # sigma / sqrt(1 - alpha^2) = 70 sigma at 0.9999, beats any threshold in sigma units).
    "PH adaptive (50 sd, delta 0.1, no fade)": lambda: PageHinkley(
        lambda_factor=50.0, delta=0.1, alpha=1.0
    ),
    "ADWIN (delta=0.002)": ADWIN,
}


def alarms(detector: Detector, stream: Sequence[float]) -> list[int]:
    update = detector.update
    return [i for i, x in enumerate(stream) if update(x)]


# --- streams -------------------------------------------------------------------------------


def gaussian(
    rng: np.random.Generator, mean: np.ndarray, sd: float | np.ndarray = 1.0
) -> list[float]:
    values: list[float] = (mean + rng.normal(0.0, 1.0, mean.size) * sd).tolist()
    return values


def bernoulli(rng: np.random.Generator, rate: np.ndarray) -> list[float]:
    hits: list[float] = (rng.random(rate.size) < rate).astype(float).tolist()
    return hits


def shifted(before: float, after: float, n_before: int, n_after: int, ramp: int) -> np.ndarray:
    """A mean/rate that is ``before``, then moves to ``after`` linearly over ``ramp`` values."""
    path = np.full(n_before + n_after, after)
    path[:n_before] = before
    path[n_before : n_before + ramp] = np.linspace(before, after, ramp + 1)[1:]
    return path


STATIONARY: dict[str, Callable[[np.random.Generator, int], list[float]]] = {
    "gaussian N(0,1)": lambda rng, n: gaussian(rng, np.zeros(n)),
    "bernoulli p=0.2": lambda rng, n: bernoulli(rng, np.full(n, 0.2)),
    # The spread switches between 0.5 and 2 every 10k events; the mean never moves.
    "gaussian sd 0.5<->2": lambda rng, n: gaussian(
        rng, np.zeros(n), np.where(np.arange(n) // 10_000 % 2 == 0, 0.5, 2.0)
    ),
}

SHIFTS: dict[str, tuple[str, float, float]] = {
    "gaussian mean 0 -> 1": ("gaussian", 0.0, 1.0),
    "bernoulli p 0.2 -> 0.4": ("bernoulli", 0.2, 0.4),
}


def shift_stream(rng: np.random.Generator, kind: str, path: np.ndarray) -> list[float]:
    return gaussian(rng, path) if kind == "gaussian" else bernoulli(rng, path)


# --- measurements --------------------------------------------------------------------------


def false_alarms(seed: int, events: int) -> None:
    print(f"\nfalse alarms per 100k events (stationary streams of {events} events)")
    print(f"{'stream':24s}" + "".join(f"{name:>34s}" for name in DETECTORS))
    for stream_name, build in STATIONARY.items():
        stream = build(np.random.default_rng(seed), events)
        counts = [len(alarms(make(), stream)) * 100_000 / events for make in DETECTORS.values()]
        print(f"{stream_name:24s}" + "".join(f"{count:34.1f}" for count in counts))


def detection_delays(seed: int, trials: int, before: int, after: int, ramp: int) -> None:
    print(
        f"\ndetection delay = first alarm at or after the change, in events: mean ± sd "
        f"[detected/trials]; change at event {before}, "
        f"{trials} seeded trials, horizon {after} events; gradual = linear over {ramp} events"
    )
    print(f"{'shift':34s}" + "".join(f"{name:>34s}" for name in DETECTORS))
    for shift_name, (kind, start, end) in SHIFTS.items():
        for shape, ramp_length in (("abrupt", 1), ("gradual", ramp)):
            path = shifted(start, end, before, after, ramp_length)
            streams = [
                shift_stream(np.random.default_rng(seed + trial), kind, path)
                for trial in range(trials)
            ]
            cells = []
            for make in DETECTORS.values():
                delays = []
                for stream in streams:
                    late = [i - before for i in alarms(make(), stream) if i >= before]
                    if late:
                        delays.append(late[0])
                spread = statistics.pstdev(delays) if delays else float("nan")
                mean = statistics.fmean(delays) if delays else float("nan")
                cells.append(f"{mean:.0f} ± {spread:.0f} [{len(delays)}/{trials}]")
            print(f"{shift_name + ', ' + shape:34s}" + "".join(f"{c:>34s}" for c in cells))


def time_per_update(make: Callable[[], Detector], stream: Sequence[float]) -> float:
    detector = make()
    update = detector.update
    start = time.perf_counter()
    for x in stream:
        update(x)
    return (time.perf_counter() - start) / len(stream) * 1e6


def speed(seed: int, events: int, repeats: int) -> None:
    print(
        f"\nµs/update on one {events}-event N(0,1) stream, best of {repeats} interleaved runs "
        f"(river {importlib.metadata.version('river')}, Python {platform.python_version()})"
    )
    stream = gaussian(np.random.default_rng(seed), np.zeros(events))
    pairs: dict[str, tuple[Callable[[], Detector], Callable[[], Detector] | None]] = {
        "Page-Hinkley, fixed threshold": (PageHinkley, drift.PageHinkley),
        "Page-Hinkley, adaptive threshold": (lambda: PageHinkley(lambda_factor=100.0), None),
        "ADWIN": (ADWIN, drift.ADWIN),
    }
    print(f"{'detector':34s}{'ours':>10s}{'river':>10s}{'ours/river':>12s}")
    for name, (ours, theirs) in pairs.items():
        our_times, their_times = [], []
        for _ in range(repeats):
            our_times.append(time_per_update(ours, stream))
            if theirs is not None:
                their_times.append(time_per_update(theirs, stream))
        ours_us = min(our_times)
        if their_times:
            theirs_us = min(their_times)
            print(f"{name:34s}{ours_us:10.2f}{theirs_us:10.2f}{ours_us / theirs_us:11.2f}x")
        else:
            print(f"{name:34s}{ours_us:10.2f}{'-':>10s}{'-':>12s}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"seed {args.seed}")
    false_alarms(args.seed, args.events)
    detection_delays(args.seed, args.trials, before=5_000, after=5_000, ramp=1_000)
    speed(args.seed, args.events, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
