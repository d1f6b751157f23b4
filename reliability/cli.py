"""`python -m reliability`: run the campaign, write its JSON result and docs/RELIABILITY.md.

    python -m reliability                                   # every phase (see the package)
    python -m reliability --phases pause,readonly           # some phases
    python -m reliability --events 600 --clusters 60 --kills 4 \\
        --pg-restarts 1 --phases crash                      # what tests/test_reliability.py runs

Every field of reliability.config.Config is an option (`--parked-events 20000`).
`--record-before-fixes LABEL` keeps this run's fault-phase verdicts in the JSON as
the `before_fixes` record; later runs carry that record over, so the report shows
each fault phase before and after the fixes. Exit status 1 unless everything passed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from reliability.campaign import run_campaign
from reliability.config import FAULT_PHASES, PHASES, Config, split_kills
from reliability.context import say

__all__ = ["main", "parse_args"]

ROOT = Path(__file__).resolve().parent.parent
# Fields set otherwise than by their own option.
_NOT_OPTIONS = {"phases", "command", "kill_split", "record_before_fixes"}


def parse_args(argv: list[str] | None) -> tuple[Config, Path | None]:
    defaults = Config()
    parser = argparse.ArgumentParser(
        prog="python -m reliability",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in dataclasses.fields(Config):
        if f.name in _NOT_OPTIONS:
            continue
        default = getattr(defaults, f.name)
        option = "--" + f.name.replace("_", "-")
        if f.name == "backend":
            parser.add_argument(option, choices=("postgres", "sqlite"), default=default)
        elif isinstance(default, str | None):
            parser.add_argument(option, default=default, help="'' for none")
        else:
            parser.add_argument(option, type=type(default), default=default)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated of {PHASES}")
    parser.add_argument(
        "--record-before-fixes",
        default=None,
        metavar="LABEL",
        help="keep this run's fault-phase verdicts as the before_fixes record",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and databases here")
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}")
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Config)
        if f.name not in _NOT_OPTIONS
    }
    for name in ("out", "report", "bad_input"):
        values[name] = values[name] or None
    cfg = Config(
        **values,
        phases=phases,
        record_before_fixes=args.record_before_fixes,
        command="python -m reliability"
        + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv)),
    )
    cfg.kill_split = split_kills(cfg.kills)
    return cfg, args.keep


def bad_input_summary(cfg: Config) -> Path | None:
    """Run the bad-input campaign (reliability/bad_input.py) into cfg.bad_input."""
    if cfg.bad_input is None:
        return None
    out = ROOT / cfg.bad_input
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"bad input: python -m reliability.bad_input --out {cfg.bad_input}")
    done = subprocess.run(
        [sys.executable, "-m", "reliability.bad_input", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if not out.exists():
        say(f"bad input: no summary (exit {done.returncode}): {done.stderr[-500:]}")
        return None
    return out


def before_fixes(cfg: Config, result: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """The record of the fault phases before the fixes: carried over from the previous
    result, and with --record-before-fixes, this run's verdicts merged into it."""
    record: dict[str, Any] = dict(previous.get("before_fixes") or {})
    if cfg.record_before_fixes is None:
        return record
    phases = dict(record.get("phases", {}))
    for name, phase in result["phases"].items():
        if name in FAULT_PHASES:
            phases[name] = {
                key: phase.get(key) for key in ("passed", "summary", "checks", "error")
            } | {"recorded": result["started"], "code_digest": result["machine"]["code_digest"]}
    return {"label": cfg.record_before_fixes, "phases": phases}


def main(argv: list[str] | None = None) -> int:
    cfg, keep = parse_args(argv)
    with contextlib.ExitStack() as stack:
        if keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gocluster-rc-")))
        else:
            work = keep
            work.mkdir(parents=True, exist_ok=True)
        result = run_campaign(cfg, work)
    if cfg.out:
        out = ROOT / cfg.out
        previous = json.loads(out.read_text("utf-8")) if out.exists() else {}
        if record := before_fixes(cfg, result, previous):
            result["before_fixes"] = record
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", "utf-8")
        say(f"result: {cfg.out}")
    if cfg.report:
        from reliability.report import render

        bad = bad_input_summary(cfg)
        bad_json = json.loads(bad.read_text("utf-8")) if bad else None
        (ROOT / cfg.report).write_text(render(result, bad_json), "utf-8")
        say(f"report: {cfg.report}")
    t = result["totals"]
    say(
        f"{t['events']} events, {t['kills']} SIGKILLs, {t['faults']} faults, {t['runs']} runs: "
        f"lost {t['lost']}, duplicated {t['duplicated']}; fault phases {t['fault_phases']}: "
        + ("PASSED" if t["passed"] else f"FAILED {t['problems']}")
    )
    return 0 if t["passed"] else 1
