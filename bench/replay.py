"""`gocluster replay` against a bare durable floor, wall clock with start-up, same input.

For each backend and run, the same JSON Lines file of the seeded workload
(tests/workload.py) goes through two processes, in alternating order:

* service: `gocluster replay FILE > /dev/null` on a fresh, migrated database;
* floor:   `python bench/replay_floor.py FILE URL` (bench/replay_floor.py: it
           imports nothing but the driver): the minimal durable work per event.

Both are timed from process start to exit (start-up included). The figure is
events per second; the ratio is service / floor of the same run. Medians of
`--runs` runs.

    python bench/replay.py                                  # 20,000 events, 3 runs, both backends
    python bench/replay.py --events 2000 --clusters 200 --runs 1 --backend sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/replay.py` from the project root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BACKENDS, RESULTS, database, machine, scratch_dir, spread
from tests.workload import cloud_events

ROOT = Path(__file__).resolve().parent.parent
FLOOR = Path(__file__).resolve().with_name("replay_floor.py")


def gocluster() -> list[str]:
    script = Path(sys.executable).with_name("gocluster")
    return [str(script)] if script.exists() else [sys.executable, "-m", "consumers.cli"]


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {done.returncode}: {done.stderr[-2000:]!r}")
    return elapsed


def run_service(file: Path, url: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOCLUSTER_")}
    env["GOCLUSTER_DATABASE_URL"] = url
    return timed([*gocluster(), "replay", str(file)], env)


def run_floor(file: Path, url: str) -> float:
    return timed([sys.executable, str(FLOOR), str(file), url], dict(os.environ))


# -- the measurement ---------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    events = cloud_events(args.clusters, args.events, seed=args.seed)
    results: list[dict[str, Any]] = []
    with scratch_dir() as scratch:
        file = scratch / "workload.jsonl"
        file.write_text("".join(json.dumps(e) + "\n" for e in events), "utf-8")
        for backend in args.backends:
            for run in range(1, args.runs + 1):
                order = ["service", "floor"] if run % 2 else ["floor", "service"]
                for config in order:
                    with database(backend, scratch) as url:
                        runner = run_service if config == "service" else run_floor
                        seconds = runner(file, url)
                    row = {"backend": backend, "config": config, "run": run}
                    row |= {"seconds": round(seconds, 3), "events_per_s": len(events) / seconds}
                    results.append(row)
                    print(f"{backend:<8} run {run} {config:<7} {row['events_per_s']:>9,.0f} ev/s")
    summary = {}
    for backend in args.backends:
        figures = {}
        for config in ("service", "floor"):
            rates = [
                r["events_per_s"]
                for r in results
                if (r["backend"], r["config"]) == (backend, config)
            ]
            figures[config] = spread(rates)
        ratios = [
            s["events_per_s"] / f["events_per_s"]
            for s in results
            for f in results
            if s["backend"] == f["backend"] == backend
            and s["run"] == f["run"]
            and (s["config"], f["config"]) == ("service", "floor")
        ]
        figures["ratio_median"] = round(statistics.median(ratios), 3)
        summary[backend] = figures
        print(f"{backend}: ratio {figures['ratio_median']}")
    return {
        "benchmark": "replay vs bare durable floor (wall clock, start-up included)",
        "events": len(events),
        "clusters": args.clusters,
        "runs": args.runs,
        "machine": machine(),
        "results": results,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    args = parser.parse_args()
    args.backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    result = measure(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
