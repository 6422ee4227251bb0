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
        pair = None
        if args.pair:
            base_id, sep, cand_id = args.pair.partition("=")
            if not (sep and base_id and cand_id):
                raise ValueError(f"--pair {args.pair!r}: expected BASELINE_ID=CANDIDATE_ID (test ids without -rN)")
            pair = (base_id, cand_id)
        comparison = compare_runs(base, cand, gates_from(specs or None, args.default_threshold),
                                  on_inconclusive=args.on_inconclusive, allow_invalid=args.allow_invalid, pair=pair)
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


def cmd_merge(args: argparse.Namespace) -> int:
    from llem_bench.results.report import write_reports
    from llem_bench.results.store import RunDir
    from llem_bench.scaleout.merge import merge_runs

    manifest = merge_runs([Path(r) for r in args.run_dirs], Path(args.out), args.allow_mixed_commits, args.allow_partial)
    summary = write_reports(RunDir(Path(args.out)))
    count = len(summary["experiments"]) if summary else 0
    print(f"merged {len(args.run_dirs)} run(s) of study '{manifest['study']}' into {args.out}: {count} result(s); "
          f"report: {Path(args.out) / 'report.md'}")
    failed = [e["test_id"] for e in (summary or {}).get("experiments", []) if e["status"] != "ok"]
    if failed:
        print(f"{len(failed)} experiment(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or manifest["state"] != "complete" else 0


CLUSTER_FLAGS = ("shards", "partition", "time", "gpus_per_task", "gpus_per_worker", "cpus_per_task", "mem", "python",
                 "launcher", "benchmarks")


def cmd_submit(args: argparse.Namespace) -> int:
    import shlex

    from pydantic import ValidationError

    from llem_bench.config.errors import format_validation_error
    from llem_bench.config.preflight import preflight
    from llem_bench.config.study import ClusterSpec, load_study
    from llem_bench.results.environment import git_info
    from llem_bench.results.store import new_run_id
    from llem_bench.scaleout.shard import load_groups
    from llem_bench.scaleout.slurm import SubmitPlan, sbatch_script, submit

    if not args.slurm:
        raise ConfigError("submit: say where: --slurm (the only scheduler supported)")
    study, experiments = load_study(args.study)
    preflight(experiments, args.study)
    fields = study.cluster.model_dump(exclude_unset=True)
    fields.update({k: getattr(args, k) for k in CLUSTER_FLAGS if getattr(args, k) is not None})
    fields["sbatch_args"] = fields.get("sbatch_args", []) + (args.sbatch_arg or [])
    fields["pytest_args"] = fields.get("pytest_args", []) + (shlex.split(args.pytest_args) if args.pytest_args else [])
    try:
        cluster = ClusterSpec.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, ClusterSpec, lambda loc: "cluster." + ".".join(map(str, loc)),
                                                  f"{args.study} + command line")) from None
    groups = len(load_groups(experiments))
    shards = cluster.shards or groups
    if shards > groups:
        raise ConfigError(f"submit: {shards} shards but the study has {groups} load group(s) (experiments that share "
                          f"a loaded model stay in one shard); use --shards {groups} or fewer")
    if not Path(cluster.benchmarks).exists():
        raise ConfigError(f"submit: benchmarks {cluster.benchmarks!r} not found from {Path.cwd()}; run from the "
                          "llem-bench checkout or pass --benchmarks PATH")
    run_id = args.run_id or new_run_id(git_info(Path.cwd()).get("git_commit"))
    plan = SubmitPlan(Path(args.study).resolve(), study.study, run_id, Path(args.out).resolve(), shards, cluster,
                      Path.cwd().resolve())
    if args.dry_run:
        print(sbatch_script(plan), end="")
        return 0
    job_id, code, script = submit(plan, args.wait)
    shard_dirs = [str(plan.shard_dir(i)) for i in range(1, shards + 1)]
    merge = f"llem-bench merge {' '.join(shard_dirs)} --out {plan.merged_dir}"
    if not args.wait:
        print(f"job {job_id}: when it has finished, collect it with:\n  {merge}")
        return 0 if code == 0 else 1
    print(f"job {job_id} finished ({'all shards ok' if code == 0 else f'sbatch --wait exit {code}: a shard failed'})")
    present = [Path(d) for d in shard_dirs if (Path(d) / "results").is_dir()]
    if len(present) < shards:
        print(f"error: {shards - len(present)} shard(s) wrote no results; see {plan.job_dir}/shard-*.out, then\n  "
              f"{merge} --allow-partial", file=sys.stderr)
        return 1
    merged = cmd_merge(argparse.Namespace(run_dirs=present, out=str(plan.merged_dir), allow_mixed_commits=False,
                                          allow_partial=False))
    return 1 if code != 0 or merged != 0 else 0


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
    compare.add_argument("--pair", metavar="BASELINE_ID=CANDIDATE_ID",
                         help="compare only these two experiments (test ids without -rN), which may differ in "
                              "settings: two experiments of one run, e.g. in-process against server mode")
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
    merge = sub.add_parser("merge", help="join shard runs (or runs of one study) into one run folder and report")
    merge.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, e.g. reports/<study>/<id>-shard1of2")
    merge.add_argument("--out", required=True, help="the merged run folder (new or empty)")
    merge.add_argument("--allow-mixed-commits", action="store_true",
                       help="merge results measured on different git commits")
    merge.add_argument("--allow-partial", action="store_true", help="merge although shards of the split are missing")
    merge.set_defaults(func=cmd_merge)
    submit = sub.add_parser("submit", help="run a study's shards as a Slurm job array (sbatch); settings from "
                                           "the study's cluster: section, overridden here")
    submit.add_argument("study", help="study YAML file")
    submit.add_argument("--slurm", action="store_true", help="submit to Slurm with sbatch")
    submit.add_argument("--shards", type=int, help="array tasks (default: one per load group)")
    submit.add_argument("--partition")
    submit.add_argument("--time", help="time limit per shard, e.g. 2:00:00")
    submit.add_argument("--gpus-per-task", type=int, help="GPUs per shard (0: none)")
    submit.add_argument("--gpus-per-worker", type=int, help="run each shard with xdist workers of this many GPUs")
    submit.add_argument("--cpus-per-task", type=int)
    submit.add_argument("--mem", help="memory per shard, e.g. 64G")
    submit.add_argument("--python", help="interpreter on the nodes (e.g. a venv's bin/python)")
    submit.add_argument("--launcher", help="command prefix on the nodes, e.g. 'apptainer exec --nv llem.sif'")
    submit.add_argument("--sbatch-arg", action="append", metavar="FLAG", help="extra sbatch flag (repeatable), "
                        "e.g. --sbatch-arg=--account=myproj")
    submit.add_argument("--pytest-args", metavar="ARGS", help="extra pytest arguments, one string, e.g. '-k bf16'")
    submit.add_argument("--benchmarks", help="benchmark tests to run (default: benchmarks)")
    submit.add_argument("--out", default="reports", help="output root (default: reports)")
    submit.add_argument("--run-id", help="run id (default: UTC timestamp and commit); shards are <id>-shard<i>of<N>")
    submit.add_argument("--wait", action="store_true", help="wait for the job, then merge the shards into "
                        "<out>/<study>/<run-id>; without it, print the job id and the merge command")
    submit.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    submit.set_defaults(func=cmd_submit)
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
