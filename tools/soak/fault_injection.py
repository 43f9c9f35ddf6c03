"""Fault-injection soak: many real `cub run`s stopped at random moments, then checked.

    .venv/bin/python tools/soak/fault_injection.py [--trials N] [--kinds K,...] [--workers W]
                                                   [--first-seed S] [--record]
    .venv/bin/python tools/soak/fault_injection.py --kind sigkill --seed 17 --keep   # replay one

Each trial builds a git project with a random backlog of scripted agents (fast ones, chatty
ones, ones that ignore SIGINT, ones that leave a setsid() grandchild, ones that commit, all
reporting usage), starts the real cub on it, and stops it with SIGKILL, SIGINT, SIGTERM or two
SIGINTs at a random moment, or (kind `natural`) lets it end by itself. Trials also draw issue
13's endings: a token budget crossed by an agent's final report, cub's stdout closed by its
reader (EPIPE), an agent deleting every *.lock then asking `cub status`, and in `--in-place`
runs an agent deleting or corrupting the task file. Then it runs recovery (`cub runs list`) and
checks the records, the task file (no stranded claim, no finished task reopened), recorded
usage against what the agents reported, and that no agent process survived (see
tests/helpers/faults.py for the checks, shared with the CI sample in
tests/e2e/test_fault_injection.py). A trial is fully described by its kind and seed.

SIGKILL lands anywhere from the process's first instant. The other signals land from the moment
the run's directory exists: before that, cub is still importing and parsing its command line,
and the CLI entry point (not the run) decides what a signal does.

With ``--record`` a section is appended to tools/soak/RESULTS.md (appended in one write, never
rewritten; the soaks before issue 13 are in tools/bench/RESULTS.md). Failures are printed in
full and written to ``failures.txt`` in the work directory, which is kept when anything failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools" / "bench"))

from benchkit import append_section, machine_line  # noqa: E402

from tests.helpers.faults import (  # noqa: E402 - after the path set-up above
    KINDS,
    Summary,
    TrialFailed,
    isolate_environment,
    run_trial,
    run_trials,
)

RESULTS = REPO / "tools" / "soak" / "RESULTS.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per kind (1000)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds")
    parser.add_argument("--workers", type=int, default=4, help="trials at once (4)")
    parser.add_argument("--first-seed", type=int, default=100_000, help="seed of the first trial")
    parser.add_argument("--kind", choices=KINDS, help="replay one trial of this kind ...")
    parser.add_argument("--seed", type=int, help="... with this seed")
    parser.add_argument("--keep", action="store_true", help="keep every trial's directory")
    parser.add_argument("--workdir", type=Path, help="where trials run (default: a temp dir)")
    parser.add_argument("--record", action="store_true", help="append to tools/soak/RESULTS.md")
    parser.add_argument("--note", default="", help="a sentence to add to the recorded section")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="the file --record appends to"
    )
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cub-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    isolate_environment(workdir / "home")
    if args.kind is not None or args.seed is not None:
        if args.kind is None or args.seed is None:
            parser.error("--kind and --seed go together")
        return replay(args.kind, args.seed, workdir)

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    seeds = range(args.first_seed, args.first_seed + args.trials)
    print(f"soak: {args.trials} trials of each of {', '.join(kinds)}; work in {workdir}")
    summaries = []
    for kind in kinds:
        summary = run_trials(kind, seeds, workdir, workers=args.workers, keep=args.keep)
        summaries.append(summary)
        print(
            f"  {kind:<14} {summary.trials} trials, {len(summary.failures)} failed, "
            f"{summary.seconds:.0f}s; {_tally(summary.features)}",
            flush=True,
        )
    failures = [f for s in summaries for f in s.failures]
    if failures:
        report = workdir / "failures.txt"
        report.write_text("\n\n".join(failures) + "\n")
        print("\n\n".join(failures))
        print(f"\n{len(failures)} failed trial(s); details in {report}")
    elif not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.record:
        record(summaries, args)
        print(f"recorded in {args.results}")
    return 1 if failures else 0


def replay(kind: str, seed: int, workdir: Path) -> int:
    try:
        trial = run_trial(kind, seed, workdir)
    except TrialFailed as exc:
        print(exc)
        return 1
    print(
        f"{kind} seed={seed}: passed (cub exit {trial.returncode}, signals after "
        f"{', '.join(f'{d:.3f}s' for d in trial.delays)}); kept in {trial.root}"
    )
    return 0


def record(summaries: list[Summary], args: argparse.Namespace) -> None:
    lines = [
        f"`tools/soak/fault_injection.py --trials {args.trials} --workers {args.workers} "
        f"--first-seed {args.first_seed}` on {machine_line()}. Each trial: a "
        "real `cub run` on a random backlog of 3-14 scripted agents, stopped at a random "
        "moment (`natural`: not stopped), then recovery (`cub runs list`) and the checks of "
        "tests/helpers/faults.py: records parse, no stranded claim, no finished task "
        "reopened, recorded usage = reported usage, no process left. *Drawn* counts the "
        "trials that went through issue 13's cases: a token budget, `--in-place`, stdout "
        "closed (EPIPE), locks deleted by the agent, the task file deleted or corrupted.",
        "",
        "| kind | trials | failed | time | drawn | how the runs ended |",
        "|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        endings = "; ".join(
            f"{name}: {count}" for name, count in sorted(summary.endings.items(), key=_by_count)
        )
        lines.append(
            f"| {summary.kind} | {summary.trials} | {len(summary.failures)} | "
            f"{summary.seconds:.0f} s | {_tally(summary.features)} | {endings} |"
        )
    failed = sum(len(s.failures) for s in summaries)
    lines += ["", "Result: " + ("every trial passed." if not failed else f"{failed} failed.")]
    if args.note:
        lines += ["", args.note]
    lines.append("")
    append_section(args.results, "Fault-injection soak", lines)


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "-"


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"({time.monotonic() - started:.0f}s)")
    sys.exit(code)
