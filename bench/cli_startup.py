"""Start-up time of the ``zoo`` command against ``python -c "import tensorflow"``.

    python bench/cli_startup.py                   # 7 alternating rounds
    python bench/cli_startup.py --rounds 11 --wait-quiet 10
    python bench/cli_startup.py --before /tmp/zoo-old   # also time another checkout's zoo

Each round runs, in fresh processes and in turn (the first one rotating, ``bench/_rounds.py``):
``zoo --help``, ``zoo models`` and ``python -c "import tensorflow"``, and records each one's wall
time from start to exit. It prints each command's median with its IQR and min-max, and the
per-round ratio of each ``zoo`` command's time to the TensorFlow import (< 1: the command starts
in that fraction of what importing TensorFlow alone costs). ``zoo`` is the console script next to
this Python when installed, else ``python -m zoo``. ``--before DIR`` adds the same two commands
run as ``python -m zoo`` from another checkout (e.g. ``git worktree add DIR <commit>``), to show a
change's effect in the same rounds. Outputs are discarded.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from bench._rounds import Spread, run_rounds, wait_quiet  # noqa: E402


def zoo_command() -> list[str]:
    """How to run ``zoo``: the console script beside ``sys.executable``, else ``python -m zoo``."""
    script = shutil.which("zoo", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "zoo"]


def commands(before: str | None = None) -> dict[str, tuple[list[str], str | None]]:
    """The timed commands by name: ``(argv, folder to run it in or None)``."""
    zoo = zoo_command()
    timed: dict[str, tuple[list[str], str | None]] = {
        "zoo --help": ([*zoo, "--help"], None),
        "zoo models": ([*zoo, "models"], None),
        "import tensorflow": ([sys.executable, "-c", "import tensorflow"], None),
    }
    if before:
        for what in ("--help", "models"):
            timed[f"before: zoo {what}"] = ([sys.executable, "-m", "zoo", what], before)
    return timed


def time_command(argv: list[str], cwd: str | None = None) -> float:
    """Wall seconds of one run of ``argv`` in ``cwd`` (``cwd`` first on the import path; outputs
    discarded); a failure raises."""
    env = None
    if cwd:
        env = dict(os.environ, PYTHONPATH=cwd + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=cwd, env=env)
    return time.perf_counter() - start


def children_cpu_seconds(name: str) -> float:
    """User + system CPU seconds of this process's finished children (every timed command)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def seconds(values: list[float]) -> str:
    """``median (IQR q1-q3; min-max)`` in seconds."""
    s = Spread.of(values)
    return f"{s.median:.3f} s (IQR {s.q1:.3f}-{s.q3:.3f}; min-max {s.low:.3f}-{s.high:.3f})"


def main(argv: list[str] | None = None) -> int:
    """Measure and print; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (at least 5)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS before each round for the machine to be quiet")
    parser.add_argument("--before", metavar="DIR",
                        help="also time python -m zoo --help / models from this checkout")
    args = parser.parse_args(argv)
    if args.rounds < 5:
        parser.error("--rounds must be at least 5")
    timed = commands(os.path.abspath(args.before) if args.before else None)
    for command, cwd in timed.values():  # warm the file cache; not counted
        time_command(command, cwd)
    rounds = run_rounds(
        {name: (lambda command=command, cwd=cwd: time_command(command, cwd))
         for name, (command, cwd) in timed.items()},
        args.rounds,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        cpu_of=children_cpu_seconds,
        before_round=(lambda: wait_quiet(timeout=args.wait_quiet)) if args.wait_quiet else None,
    )
    print(f"zoo: {' '.join(zoo_command())}; python {sys.version.split()[0]}; "
          f"{args.rounds} alternating rounds; other load {rounds.median_load():.2f} cores (median)")
    for name, values in rounds.times.items():
        print(f"{name:26s} {seconds(values)}")
    baseline = rounds.times["import tensorflow"]
    for name in [name for name in timed if name != "import tensorflow"]:
        r = Spread.of([ours / tf for ours, tf in zip(rounds.times[name], baseline, strict=True)])
        print(f"{name} / import tensorflow: {r.median:.3f}x (IQR {r.q1:.3f}-{r.q3:.3f}; "
              f"min-max {r.low:.3f}-{r.high:.3f}; {r.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
