"""How long the command line takes to answer: ``custos --help`` and ``custos check``, each a
fresh process as a script calling it per request would start it, against ``python -c pass``
(the interpreter's own start) in the same run.

Sets up a home with ``custos init``, ``custos example`` and ``custos org load`` (not timed),
then runs each command ``--runs`` times, interleaved, and prints the median and spread of
wall-clock time, the median minus the interpreter's start, and the ratio to it. Goals (issue
23): ``--help`` under 0.3 s, ``check`` under 0.5 s on the project's machine. Also prints
the import time of ``custos.cli`` alone (``-X importtime``), the part a command pays before
it starts its work, and the floor a decision cannot go below while it opens the store:
``python -c`` importing only the libraries ``check`` needs (SQLAlchemy's ORM, cedarpy,
cryptography, Typer, PyYAML) and none of custos. Custos's sources are compiled first, as
``scripts/setup`` and any installer do (with ``PYTHONDONTWRITEBYTECODE`` set, as here,
nothing would be cached otherwise). Asserts nothing.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHECK = [
    "check",
    "--principal",
    "emp-1001",
    "--subject",
    "user-42",
    "--category",
    "ip_history",
    "--purpose",
    "support",
    "--ticket",
    "T-9001",
]


#: What ``custos check`` cannot do without: the libraries it imports, and nothing of custos.
LIBRARIES = (
    "import sqlalchemy.orm, cedarpy, typer, rich.console, yaml, "
    "cryptography.hazmat.primitives.asymmetric.ed25519"
)


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, capture_output=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cli_import_seconds(env: dict[str, str]) -> float:
    """``custos.cli``'s own import time, as ``-X importtime`` reports it (microseconds)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import custos.cli"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    for line in result.stderr.splitlines():
        if line.rstrip().endswith("| custos.cli"):
            return int(line.split("|")[1]) / 1e6
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        env = {**os.environ, "CUSTOS_HOME": str(folder / "home")}
        env.pop("CUSTOS_DATABASE_URL", None)
        custos = [sys.executable, "-m", "custos"]
        for setup in (["init"], ["example"], ["org", "load", "directory.yaml"]):
            subprocess.run([*custos, *setup], env=env, cwd=folder, check=True, capture_output=True)
        compileall.compile_dir(Path(__file__).resolve().parents[1] / "src", quiet=1)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "libraries only": [sys.executable, "-c", LIBRARIES],
            "custos --help": [*custos, "--help"],
            "custos check": [*custos, *CHECK],
        }
        for argv in commands.values():  # warm the file cache and custos's own caches
            run(argv, env, folder)
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                wall, used = run(argv, env, folder)
                times[name].append(wall)
                cpu[name].append(used)
        base = statistics.median(times["python -c pass"])
        print(f"{args.runs} runs each, interleaved; seconds (cpu: the process's user + system)")
        print(
            f"{'command':<16} {'median':>8} {'min':>8} {'max':>8} {'minus start':>12} "
            f"{'ratio':>7} {'cpu':>7}"
        )
        for name, taken in times.items():
            median = statistics.median(taken)
            print(
                f"{name:<16} {median:8.3f} {min(taken):8.3f} {max(taken):8.3f} "
                f"{median - base:12.3f} {median / base:7.1f}x {statistics.median(cpu[name]):7.3f}"
            )
        goals = {"custos --help": 0.3, "custos check": 0.5}
        for name, goal in goals.items():
            median = statistics.median(times[name])
            verdict = "meets" if median < goal else "misses"
            print(f"{name}: median {median:.3f} s {verdict} the {goal} s goal")
        print(f"import custos.cli alone: {cli_import_seconds(env):.3f} s (-X importtime)")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
