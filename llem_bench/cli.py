"""`llem-bench`: post-hoc commands that need no GPU. Measuring is pytest's job:
`pytest benchmarks --study <study.yaml>`.

Exit codes: 0 ok, 1 the command ran but found a problem (failed experiments, a significant
regression in `compare`), 2 bad usage or invalid input.
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
    notes = preflight(experiments, args.study)
    repeats = f", each run {study.repeats} times (measurement.repeats; seed {study.repeat_seed})" \
        if study.repeats > 1 else ""
    print(f"study '{study.study}': {len(experiments)} experiment(s){repeats}")
    for exp in experiments:
        c = exp.config
        section = c.backend_config.model_dump(exclude_defaults=True)
        print(f"  {exp.test_id}")
        print(f"      model={c.model} dtype={c.dtype} backend={c.backend} {section or ''}")
        if c.scenario != "offline":
            from llem_bench.scenarios.serving import describe

            print(f"      {describe(c)}")
            continue
        print(f"      workload: {c.workload.num_prompts} prompts from {c.workload.prompts}, "
              f"{c.workload.output_tokens} output tokens; cycles={c.measurement.cycles} "
              f"min_window_s={c.measurement.min_window_s} energy={c.measurement.energy}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
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


def cmd_compare(args: argparse.Namespace) -> int:
    from llem_bench.config.study import GateSpec
    from llem_bench.results.compare import (compare_runs, gated_summary, gates_from, load_side,
                                            render_comparison_markdown)
    from llem_bench.results.store import write_text_atomic

    try:
        base, cand = load_side(args.baseline), load_side(args.candidate)
        specs = {}
        for text in args.gate or []:
            metric, _, limit = text.partition(":")
            direction = "max_decrease" if limit.startswith("-") else "max_increase"
            specs[metric] = GateSpec(**{direction: limit.lstrip("+-")})
        comparison = compare_runs(base, cand, gates_from(specs or None, args.default_threshold),
                                  on_inconclusive=args.on_inconclusive, allow_invalid=args.allow_invalid)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    text = render_comparison_markdown(comparison)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    for warning in comparison.loud_warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    for line in gated_summary(comparison) + comparison.failures + [comparison.gate_line]:
        print(line, file=sys.stderr)
    return 1 if comparison.failed else 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from llem_bench.results import export
    from llem_bench.results.compare import load_side
    from llem_bench.results.store import write_json_atomic

    try:
        results = [r for runs in load_side(args.run_dir).values() for r in runs]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    out = Path(args.out)
    if args.format == "csv":
        export.to_csv(results, out)
    elif args.format == "pytest-benchmark":
        write_json_atomic(out, export.to_pytest_benchmark_json(results))
    else:  # github-action-benchmark wants one file per direction
        bigger, smaller = export.to_github_action_benchmark(results)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "bigger_is_better.json", bigger)
        write_json_atomic(out / "smaller_is_better.json", smaller)
    print(json.dumps({"wrote": str(out), "experiments": len(results)}))
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    from llem_bench.config.introspect import render_params

    try:
        print(render_params(args.backend, as_json=args.json))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return 0


def cmd_coverage(args: argparse.Namespace) -> int:
    from llem_bench.config.coverage import render_coverage

    print(render_coverage(args.backend))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from llem_bench.doctor import doctor_report, render_doctor

    print(render_doctor(doctor_report()), end="")
    return 0


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
    compare = sub.add_parser("compare", help="compare a candidate run with a baseline over their repeats; exit 1 when "
                             "the gate fails (regression, missing experiment or metric, invalid result, inconclusive)")
    compare.add_argument("baseline", help="baseline run folder or result JSON")
    compare.add_argument("candidate", help="candidate run folder or result JSON")
    compare.add_argument("--gate", action="append", metavar="METRIC:LIMIT",
                         help="e.g. energy_per_output_token_j:5%% or output_tokens_per_s:-5%% (repeatable)")
    compare.add_argument("--default-threshold", type=float, default=5.0, metavar="PCT",
                         help="threshold of the default gates in percent (default 5)")
    compare.add_argument("--on-inconclusive", choices=["fail", "warn"], default="fail",
                         help="a gated metric the comparison cannot decide fails the gate (default) or warns")
    compare.add_argument("--allow-invalid", action="store_true",
                         help="compare results whose validity verdict is 'invalid' (with a warning) instead of failing")
    compare.add_argument("--out", help="also write the comparison markdown here")
    compare.set_defaults(func=cmd_compare)
    export = sub.add_parser("export", help="export a run for other tools")
    export.add_argument("run_dir", help="run folder")
    export.add_argument("--format", choices=["pytest-benchmark", "github-action-benchmark", "csv"], required=True)
    export.add_argument("--out", required=True, help="file (folder for github-action-benchmark)")
    export.set_defaults(func=cmd_export)
    params = sub.add_parser("params", help="every config field of a backend: type, default, range, upstream, effect")
    params.add_argument("backend", choices=["pytorch", "vllm", "tensorrt", "common"])
    params.add_argument("--json", action="store_true", help="machine-readable output")
    params.set_defaults(func=cmd_params)
    cov = sub.add_parser("coverage", help="energy-relevant upstream parameters we model, and those we do not")
    cov.add_argument("backend", choices=["pytorch", "vllm", "tensorrt"])
    cov.set_defaults(func=cmd_coverage)
    doctor = sub.add_parser("doctor", help="what this machine can measure, and why not")
    doctor.set_defaults(func=cmd_doctor)
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
