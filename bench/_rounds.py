"""Fair side-by-side timing on a shared, noisy machine: alternate the compared systems in rounds.

Timing system A for a while and then system B lets any change in the machine's load between the
two (another job starting, the CPU clock moving) land on one side only; on the project's shared
2-core CPU that swung the same zoo / keras-hub comparison between 0.88x and 1.15x. Here every
system is built and warmed up once, then each of R rounds times a few steps of every system in
turn, the first system of round r being system r mod n. Each round gives one ratio per pair,
measured under nearly the same load; the median of these ratios, with its spread, is the figure
to report::

    rounds = run_rounds({"zoo": zoo_round, "keras-hub": hub_round}, 8)
    print(speed_ratio(rounds.times["zoo"], rounds.times["keras-hub"]))  # 1.12x (IQR 1.05-1.18..

On Linux each round also records how many cores other processes kept busy meanwhile (from
``/proc/stat``, less the CPU time of the processes being timed), so a report can say how loaded
the machine was and give the ratio over the quiet rounds alone.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

QUIET_CORES = 0.25  # a round is quiet when other processes kept fewer cores than this busy


def machine_busy_seconds() -> float | None:
    """CPU seconds the machine's cores have spent busy since boot (``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``, all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all threads."""
    return time.process_time()


def wait_quiet(threshold: float = QUIET_CORES, timeout: float = 30.0, window: float = 0.5) -> bool:
    """Wait, at most ``timeout`` seconds, for a ``window`` in which the machine's busy cores (all
    processes, this one idle) stay below ``threshold``; False on timeout or without /proc."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy, start = machine_busy_seconds(), time.perf_counter()
        if busy is None:
            return False
        time.sleep(window)
        if (machine_busy_seconds() - busy) / (time.perf_counter() - start) < threshold:
            return True
    return False


@dataclass
class Rounds:
    """What ``run_rounds`` measured, one value per round for every system."""

    times: dict[str, list[float]]  # the system's seconds per step (what its round function gave)
    other_load: dict[str, list[float]]  # cores kept busy by other processes (nan: unknown)

    def quiet(self, threshold: float = QUIET_CORES) -> list[int]:
        """The rounds in which no system's timing shared the machine with more than
        ``threshold`` cores of other work."""
        rounds = range(len(next(iter(self.times.values()))))
        return [r for r in rounds if all(load[r] < threshold for load in self.other_load.values())]

    def median_load(self) -> float:
        """The median over every system's rounds of the cores other processes kept busy."""
        loads = [v for load in self.other_load.values() for v in load if not math.isnan(v)]
        return statistics.median(loads) if loads else math.nan


def run_rounds(systems: Mapping[str, Callable[[], float]], rounds: int,
               progress: Callable[[str], None] | None = None,
               cpu_of: Callable[[str], float] | None = None,
               before_round: Callable[[], object] | None = None) -> Rounds:
    """Call every system's round function once per round and collect what each returns.

    ``systems`` maps a name to a function that runs one round of that system (a few steps or
    calls, already warmed up) and returns its time per step or call, in seconds. Round ``r``
    starts with system ``r mod n`` and goes on in order, so each system goes first equally often.
    ``cpu_of(name)``: the CPU seconds used so far by the processes that run system ``name``
    (default: this process), to tell their work from other processes' load. ``before_round``
    is called before each round (e.g. ``wait_quiet``).
    """
    names = list(systems)
    cpu_of = cpu_of or (lambda name: own_cpu_seconds())
    result = Rounds({name: [] for name in names}, {name: [] for name in names})
    for r in range(rounds):
        if before_round is not None:
            before_round()
        start = r % len(names)
        for name in names[start:] + names[:start]:
            busy, own, wall = machine_busy_seconds(), cpu_of(name), time.perf_counter()
            result.times[name].append(systems[name]())
            wall = time.perf_counter() - wall
            if busy is None:
                result.other_load[name].append(math.nan)
            else:
                other = machine_busy_seconds() - busy - (cpu_of(name) - own)
                result.other_load[name].append(max(other, 0.0) / wall)
        if progress is not None:
            progress(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{name} {1e3 * result.times[name][-1]:.1f} ms "
                f"(other load {result.other_load[name][-1]:.2f} cores)" for name in names))
    return result


def time_calls(fn: Callable[[], object], calls: int) -> float:
    """Median wall time, in seconds, of ``calls`` calls of ``fn`` (already warmed up)."""
    samples = []
    for _ in range(max(calls, 1)):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@dataclass(frozen=True)
class Spread:
    """The median of per-round values with their quartiles and extremes."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        values = sorted(values)
        if not values:
            raise ValueError("no values")
        if len(values) > 1:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        else:
            q1 = q3 = values[0]
        return cls(statistics.median(values), q1, q3, values[0], values[-1], len(values))

    def __str__(self) -> str:
        return (f"{self.median:.2f}x (IQR {self.q1:.2f}-{self.q3:.2f}, "
                f"min-max {self.low:.2f}-{self.high:.2f}, {self.rounds} rounds)")

    def short(self) -> str:
        """``median [min-max]``, for a table cell."""
        return f"{self.median:.2f}x [{self.low:.2f}-{self.high:.2f}]"


def speed_ratio(ours: Sequence[float], peer: Sequence[float],
                rounds: Sequence[int] | None = None) -> Spread:
    """How many times faster ``ours`` is than ``peer``, round by round (peer time / our time,
    > 1 when ours is faster), as a median with its spread; over ``rounds`` only when given."""
    if len(ours) != len(peer) or not ours:
        raise ValueError(f"need one time per round for both: {len(ours)} and {len(peer)}")
    picked = range(len(ours)) if rounds is None else rounds
    return Spread.of([peer[r] / ours[r] for r in picked])


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (a system's per-round seconds per step)."""
    return statistics.median(values)
