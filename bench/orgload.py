"""Importing a large directory: ``custos org import`` (JSON Lines, streamed, ledgered chunk by
chunk) against today's ``custos org load`` path (a JSON document, merged through the ORM), in
one run on one machine.

Builds a synthetic directory (N subjects, N/100 principals, N/10 tickets; one subject in 500
protected), writes it both as a directory JSON file and as directory lines, and loads it into
fresh homes on the same database kind:

- ``org load`` path: ``read_directory_file`` + ``DirectoryStore.merge`` (what the command
  runs), from the JSON file (its fastest input) and from the same as YAML, on ``--old``
  subjects (default 20,000), its time per row projected linearly to ``--subjects`` (its CPU
  time per row measured here at 10^4 and 5x10^4 subjects did not grow);
- ``org import`` path: :func:`custos.directory.import_lines`, on the same ``--old`` subjects
  (the like-for-like ratio) and on ``--subjects`` (default 10^6);
- then the import again (nothing changes: nothing ledgered) and with 1 % of subjects changed.

Both wall-clock and this process's CPU time are printed (the machine is shared: CPU time is
the steadier figure), with ratios, and ``custos log verify``'s verdict on the big home.
Asserts nothing. ``--quick``: 10^5 subjects and 10^4 for the old path.
``CUSTOS_DATABASE_URL=postgresql://…`` runs on PostgreSQL (each home gets a fresh schema
only if the URL's database is empty: use a scratch database).

Measured on this shared 2-core machine (docs/design/authority.md, *Measured*), org import
against org load of JSON, 1,110,000 rows on SQLite: before the import encoded its own
entries, 3.8x (45.5 s); after, 7.9x wall, 7.8x CPU (15.3 s, 9.9 µs of CPU per row; org load
77 µs/row), 28x against YAML. ``--quick`` (111,000 rows): 6.6x -> 9.9x wall, 10.2x CPU on
SQLite; 3.9x -> 6.0x wall (13.0x CPU, the server's not counted) on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from custos.access import Custos
from custos.directory import import_lines, read_directory_file


def entries(subjects: int, *, changed: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The synthetic directory, per section (``changed``: 1 % of subjects protected anew)."""
    principals = max(subjects // 100, 10)
    return {
        "principals": [
            {
                "id": f"emp-{i}",
                "name": f"P{i}",
                "role": "support_agent" if i % 3 else "fraud_analyst",
                "team": f"team-{i % 50}",
                "country": "US",
                "groups": ["approvers"] if i % 97 == 0 else [],
            }
            for i in range(principals)
        ],
        "subjects": [
            {
                "id": f"user-{i}",
                "jurisdiction": "US" if i % 4 else "DE",
                "protected": ["journalist"] if i % 500 == 0 or (changed and i % 100 == 7) else [],
            }
            for i in range(subjects)
        ],
        "tickets": [
            {
                "id": f"T-{i}",
                "kind": "support",
                "subject": f"user-{i * 10}",
                "assignee": f"emp-{i % principals}",
                "status": "open",
                "opened": "2026-11-02T09:00:00Z",
            }
            for i in range(subjects // 10)
        ],
    }


def write_files(
    folder: Path, name: str, data: dict[str, list[dict[str, Any]]], *, as_yaml: bool = False
) -> tuple[Path, Path]:
    document = folder / f"{name}.json"
    lines = folder / f"{name}.jsonl"
    document.write_text(json.dumps(data), encoding="utf-8")
    if as_yaml:
        document.with_suffix(".yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    singular = {"principals": "principal", "subjects": "subject", "tickets": "ticket"}
    with lines.open("w", encoding="utf-8") as out:
        for section, items in data.items():
            for item in items:
                out.write(json.dumps({singular[section]: item}) + "\n")
    return document, lines


def rows(data: dict[str, list[dict[str, Any]]]) -> int:
    return sum(len(items) for items in data.values())


def timed(action: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def fresh_home(root: Path, name: str) -> Path:
    home = root / name
    Custos.init(home).close()
    return home


def old_load(home: Path, document: Path) -> None:
    with Custos.open(home) as system:
        system.directory.merge(read_directory_file(document), source=str(document))


def new_import(home: Path, lines: Path) -> None:
    with Custos.open(home) as system:
        import_lines(system.directory, lines)


def line(label: str, n: int, wall: float, cpu: float) -> None:
    print(
        f"{label:<44} {n:>9,} rows  wall {wall:8.2f} s ({wall / n * 1e6:6.1f} µs/row)  "
        f"cpu {cpu:8.2f} s ({cpu / n * 1e6:6.1f} µs/row)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--old", type=int, default=20_000, help="subjects for the old path")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.old = 100_000, 10_000
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        small = entries(args.old)
        small_doc, small_lines = write_files(root, "small", small, as_yaml=True)
        big = entries(args.subjects)
        _, big_lines = write_files(root, "big", big)
        _, big_changed = write_files(root, "changed", entries(args.subjects, changed=True))
        del big

        # Homes are made (custos init: migrations, keys) before the clock starts.
        n_small = rows(small)
        old_home, small_home = fresh_home(root, "old"), fresh_home(root, "new-small")
        yaml_home = fresh_home(root, "old-yaml")
        old_wall, old_cpu = timed(lambda: old_load(old_home, small_doc))
        line("org load (old path), JSON", n_small, old_wall, old_cpu)
        yaml_wall, yaml_cpu = timed(lambda: old_load(yaml_home, small_doc.with_suffix(".yaml")))
        line("org load (old path), YAML", n_small, yaml_wall, yaml_cpu)
        new_wall, new_cpu = timed(lambda: new_import(small_home, small_lines))
        line("org import, same N", n_small, new_wall, new_cpu)

        n_big = sum(1 for _ in big_lines.open(encoding="utf-8"))
        home = fresh_home(root, "new-big")
        big_wall, big_cpu = timed(lambda: new_import(home, big_lines))
        line("org import", n_big, big_wall, big_cpu)
        again_wall, again_cpu = timed(lambda: new_import(home, big_lines))
        line("org import again (nothing changes)", n_big, again_wall, again_cpu)
        moved_wall, moved_cpu = timed(lambda: new_import(home, big_changed))
        line("org import, 1 % of subjects changed", n_big, moved_wall, moved_cpu)
        verify_wall = time.perf_counter()
        with Custos.open(home) as system:
            report = system.verify_log()
            findings = system.verify_authority(sample=0).projection.findings
            size = system.ledger.size()
        verify_wall = time.perf_counter() - verify_wall
        print(f"ledger entries after the imports: {size:,}")
        print(
            f"log verify: {'ok' if report.ok and not findings else 'FAILED'}, "
            f"{len(findings)} authority finding(s) ({verify_wall:.1f} s)"
        )

        per_row_old = old_wall / n_small, old_cpu / n_small
        print()
        print(
            f"same N ({n_small:,} rows): org import is {old_wall / new_wall:5.1f}x faster "
            f"(wall), {old_cpu / new_cpu:5.1f}x (cpu)"
        )
        projected = per_row_old[0] * n_big, per_row_old[1] * n_big
        print(
            f"{n_big:,} rows: org load projected linearly {projected[0]:8.1f} s wall, "
            f"{projected[1]:8.1f} s cpu"
        )
        print(
            f"{n_big:,} rows: org import measured       {big_wall:8.1f} s wall, "
            f"{big_cpu:8.1f} s cpu -> {projected[0] / big_wall:5.1f}x (wall), "
            f"{projected[1] / big_cpu:5.1f}x (cpu) faster than org load of JSON"
        )
        from_yaml = yaml_wall / n_small * n_big, yaml_cpu / n_small * n_big
        print(
            f"{n_big:,} rows: org load of YAML (custos example's format) projected "
            f"{from_yaml[0]:.1f} s wall, {from_yaml[1]:.1f} s cpu -> org import "
            f"{from_yaml[0] / big_wall:.1f}x (wall), {from_yaml[1] / big_cpu:.1f}x (cpu) faster"
        )


if __name__ == "__main__":
    main()
