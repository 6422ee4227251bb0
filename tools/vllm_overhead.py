"""The suite's vLLM numbers against a minimal loop, in one process, interleaved (issue 11, item 7).

One engine is built by the suite's own backend (so the engine arguments are the suite's), then each
repeat runs, in a seeded shuffled order:
  suite-on   the suite's run_experiment with its monitors (NVML counter meter + power sampler thread)
  suite-off  the same with the monitors off (measurement.energy: none, sampler off)
  loop       tools/vllm_minimal_loop.py's measure(): plain LLM.generate, the same token ids and the
             same window rule, the NVML counter read at the window edges and nothing else
and the tool reports each side's tok/s over repeats (mean, SD, CV), the ratios suite-on/loop and
suite-on/suite-off with a 95% CI over the paired repeats (Student t). Beside each side it records the
machine's state, read outside the windows: the host's CPU time split over the side (busy, and steal: a
VM's CPU taken by its neighbours), and the GPU's SM clock, temperature and throttle reasons at the side's
end. runs/overhead-3 saw every side's throughput switch between two levels; these say which state each
side ran in. The sides that read the energy counter (suite-on, loop) are also fitted as one line of power
against tok/s (power_line): the intercept is the GPU's resident power while it waits on the host, the slope
its net J/token, so the two sides' GPU work per token compares across machine states.

    python tools/vllm_overhead.py --study studies/h200-overhead.yaml --repeats 5 --out DIR
    python tools/vllm_overhead.py --study ... --from-json DIR/overhead.json --out DIR   (summary again, no GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vllm_minimal_loop as loop  # noqa: E402

from llem_bench.config.study import load_study  # noqa: E402
from llem_bench.energy.meter import make_energy_meter  # noqa: E402
from llem_bench.harness.pool import BackendPool  # noqa: E402
from llem_bench.harness.runner import run_experiment  # noqa: E402
from llem_bench.results.store import utc_now  # noqa: E402
from llem_bench.workload.prompts import prepare_workload  # noqa: E402


def monitors_off(experiment: Any) -> Any:
    config = experiment.config
    measurement = config.measurement.model_copy(update={"energy": "none", "sampler_interval_s": 0.0,
                                                        "baseline_idle_s": 0.0})
    return type(experiment)(test_id=experiment.test_id, config=config.model_copy(update={"measurement": measurement}),
                            explicit=experiment.explicit)


def suite(experiment: Any, backend: Any) -> dict[str, Any]:
    energy = experiment.config.measurement.energy
    result = run_experiment(experiment, backend, lambda ordinals, sampler=None: make_energy_meter(energy, ordinals, sampler),
                            run_id="overhead", started_at=utc_now(), model_reused=True, load_s=0.0)
    tps = result.metrics["output_tokens_per_s"]
    jpt = result.metrics.get("energy_per_output_token_j")
    return {"output_tokens_per_s": tps.mean, "cycles": tps.values,
            "energy_per_output_token_j": jpt.mean if jpt else None, "verdict": result.validity.get("verdict")}


def ratio_ci(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Mean of the paired ratios a/b - 1 and its 95% CI (t over repeats)."""
    from scipy import stats

    diffs = [a / b - 1 for a, b in pairs]
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "ci95": None, "n": len(diffs)}
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": len(diffs)}


def power_line(runs: list[dict[str, Any]], repeats: list[int]) -> Optional[dict[str, Any]]:
    """Mean power against tok/s over the sides that read the energy counter (suite-on, loop), fitted as a line.

    Where the host sets the pace, the GPU idles between steps at its resident power, so power falls with
    throughput along power = resident + J/token_net x tok/s. A side whose harness made the GPU do more work
    per token would sit above the line: the per-side residuals and net J/token (power above the intercept,
    per token) compare suite-on with the loop whatever state the machine was in.
    """
    from scipy import stats

    measured = {(r["repeat"], r["side"]): (r["output_tokens_per_s"], r["output_tokens_per_s"] * r["energy_per_output_token_j"])
                for r in runs if r.get("energy_per_output_token_j")}
    if len(measured) < 3 or len({round(tps) for tps, _ in measured.values()}) < 2:
        return None
    fit = stats.linregress([tps for tps, _ in measured.values()], [w for _, w in measured.values()])
    net = {key: (w - fit.intercept) / tps for key, (tps, w) in measured.items()}
    sides: dict[str, Any] = {}
    for side in sorted({side for _, side in measured}):
        keys = [key for key in measured if key[1] == side]
        residuals = [w - fit.intercept - fit.slope * tps for tps, w in (measured[k] for k in keys)]
        sides[side] = {"residual_w": {"mean": statistics.mean(residuals), "values": residuals},
                       "net_j_per_token": spread([net[k] for k in keys])}
    pairs = [(net[k, "suite-on"], net[k, "loop"]) for k in repeats if (k, "suite-on") in net and (k, "loop") in net]
    return {"points": len(measured), "resident_w": fit.intercept, "net_j_per_token": fit.slope, "r": fit.rvalue,
            "sides": sides, "suite_on_vs_loop_net_j_per_token": ratio_ci(pairs) if pairs else None}


def spread(values: list[float]) -> dict[str, Any]:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "cv": sd / mean if sd is not None else None, "values": values}


def host_cpu_times() -> Optional[list[int]]:
    """The host's aggregate CPU times from /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def host_cpu_split(before: Optional[list[int]], after: Optional[list[int]]) -> dict[str, Any]:
    """Busy and steal shares of the host's CPU time between two /proc/stat readings."""
    if not before or not after:
        return {"host_cpu": "unavailable (no /proc/stat)"}
    delta = [a - b for a, b in zip(after, before)]
    total = sum(delta[:8]) or 1
    idle = delta[3] + delta[4]
    return {"host_busy_share": round(1 - idle / total, 4), "host_steal_share": round(delta[7] / total, 4)
            if len(delta) > 7 else None, "loadavg_1m": os.getloadavg()[0]}


def gpu_state() -> dict[str, Any]:
    try:
        import pynvml

        from llem_bench.energy.sampler import clock_event_reasons, decode_throttle_reasons

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                "temperature_c": pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
                "throttle_reasons": decode_throttle_reasons(clock_event_reasons(pynvml, handle), throttling_only=True)}
    except Exception as exc:  # no NVML here, or an older binding
        return {"gpu_state": f"unavailable: {exc}"}


SIDES = ("suite-on", "suite-off", "loop")
LOG_LINE = re.compile(r"^overhead: repeat (\d+) (suite-on|suite-off|loop): ([0-9.]+) tok/s$", re.M)


def summarise(runs: list[dict[str, Any]], args: argparse.Namespace, test_id: Optional[str]) -> dict[str, Any]:
    """Spread per side and paired ratios over the repeats every side completed."""
    measured = {(r["repeat"], r["side"]): r["output_tokens_per_s"] for r in runs}
    done = sorted({k for k, _ in measured if all((k, s) in measured for s in SIDES)})
    tps = {s: [measured[k, s] for k in done] for s in SIDES}
    summary: dict[str, Any] = {"study": args.study, "test_id": test_id, "repeats_asked": args.repeats,
                               "repeats_complete": len(done), "seed": args.seed}
    if done:
        summary.update({
            "tokens_per_s": {s: spread(v) for s, v in tps.items()},
            "suite_on_vs_loop": ratio_ci(list(zip(tps["suite-on"], tps["loop"]))),
            "suite_on_vs_off": ratio_ci(list(zip(tps["suite-on"], tps["suite-off"]))),
            "suite_off_vs_loop": ratio_ci(list(zip(tps["suite-off"], tps["loop"]))),
        })
    line = power_line(runs, done)
    if line:
        summary["power_line"] = line
    return {**summary, "runs": runs}


def write(out: Path, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="a study with one vLLM experiment (the first is used)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loop-warmup-passes", type=int, default=None,
                        help="warmup passes of the minimal loop (default: the study's warmup.max_runs, so the "
                             "loop is never less warmed up than the suite, whose warmup stops at the first stable pair)")
    parser.add_argument("--from-log", metavar="LOG", help="rebuild overhead.json from the 'overhead: repeat' lines of "
                        "an earlier run's log (e.g. one cut by a time limit) instead of measuring")
    parser.add_argument("--from-json", metavar="JSON", help="recompute the summary of an earlier overhead.json "
                        "(its runs, energy included) instead of measuring")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: needs at least 1 (5 or more to bound a few percent)")
    out = Path(args.out)
    if args.from_log or args.from_json:
        test_id = None
        if args.from_json:
            earlier = json.loads(Path(args.from_json).read_text())
            runs, test_id = earlier["runs"], earlier.get("test_id")
        else:
            runs = [{"repeat": int(k), "side": side, "output_tokens_per_s": float(v), "from_log": args.from_log}
                    for k, side, v in LOG_LINE.findall(Path(args.from_log).read_text())]
        summary = summarise(runs, args, test_id)
        write(out, summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
        return
    _, experiments = load_study(args.study)
    on = experiments[0]
    off = monitors_off(on)
    pool = BackendPool()
    backend, _, load_s = pool.acquire(on.config)
    print(f"overhead: engine loaded in {load_s:.0f} s", file=sys.stderr, flush=True)
    workload = prepare_workload(on.config.workload, backend.tokenizer)
    measurement = on.config.measurement
    loop_warmup = args.loop_warmup_passes if args.loop_warmup_passes is not None else measurement.warmup.max_runs
    rng = random.Random(args.seed)
    runs: list[dict[str, Any]] = []
    for repeat in range(1, args.repeats + 1):
        order = list(SIDES)
        rng.shuffle(order)
        for side in order:
            cpu_before = host_cpu_times()
            if side == "loop":
                row = loop.measure(backend.llm, workload.prompt_token_ids, workload.output_tokens,
                                   min_window_s=measurement.min_window_s, windows=measurement.cycles,
                                   warmup_passes=loop_warmup, counter=loop.nvml_counter())
                row["cycles"] = [w["output_tokens_per_s"] for w in row.pop("windows")]
            else:
                backend.configure(on.config)
                row = suite(on if side == "suite-on" else off, backend)
            row["machine"] = {**host_cpu_split(cpu_before, host_cpu_times()), **gpu_state()}
            runs.append({"repeat": repeat, "side": side, **row})
            print(f"overhead: repeat {repeat} {side}: {row['output_tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
            print(f"overhead: machine during repeat {repeat} {side}: {json.dumps(row['machine'])}", file=sys.stderr, flush=True)
            summary = summarise(runs, args, on.test_id)
            write(out, summary)  # after every side: a run cut by a time limit keeps what it measured
    pool.close()
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
