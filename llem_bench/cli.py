"""`llem-bench`: post-hoc commands that need no GPU. Measuring is pytest's job:
`pytest benchmarks --study <study.yaml>`.

Exit codes: 0 ok, 1 the command ran but found a problem (e.g. failed experiments),
2 bad usage or invalid input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llem_bench.config.errors import ConfigError


def cmd_validate(args: argparse.Namespace) -> int:
    from llem_bench.config.preflight import preflight
    from llem_bench.config.study import load_study

    study, experiments = load_study(args.study)
    preflight(experiments, args.study)
    print(f"study '{study.study}': {len(experiments)} experiment(s)")
    for exp in experiments:
        c = exp.config
        section = c.backend_config.model_dump(exclude_defaults=True)
        print(f"  {exp.test_id}")
        print(f"      model={c.model} dtype={c.dtype} backend={c.backend} {section or ''}")
        print(f"      workload: {c.workload.num_prompts} prompts from {c.workload.prompts}, "
              f"{c.workload.output_tokens} output tokens; cycles={c.measurement.cycles} "
              f"min_window_s={c.measurement.min_window_s} energy={c.measurement.energy}")
    print(f"run it: pytest benchmarks --study {args.study}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from llem_bench.results.report import write_reports
    from llem_bench.results.store import RunDir

    run = RunDir(Path(args.run_dir))
    if not run.results_dir.is_dir():
        raise ConfigError(f"{args.run_dir}: no results/ folder; pass a run folder such as reports/<study>/<run-id>")
    summary = write_reports(run)
    if summary is None:
        raise ConfigError(f"{args.run_dir}: results/ is empty")
    print(f"wrote {run.path / 'report.md'} and {run.path / 'study.json'}")
    for problem in summary["unreadable_results"]:
        print(f"warning: {problem}", file=sys.stderr)
    failed = [e["test_id"] for e in summary["experiments"] if e["status"] != "ok"]
    if failed:
        print(f"{len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or summary["unreadable_results"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llem-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser("validate", help="check a study and print its experiments and test ids")
    validate.add_argument("study", help="study YAML file")
    validate.set_defaults(func=cmd_validate)
    report = sub.add_parser("report", help="rebuild report.md and study.json of a run folder")
    report.add_argument("run_dir", help="reports/<study>/<run-id>")
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
