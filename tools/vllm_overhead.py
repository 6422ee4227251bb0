"""The suite's vLLM numbers against a minimal loop, in one process, interleaved (issue 11, item 7).

One engine is built by the suite's own backend (so the engine arguments are the suite's), then each
repeat runs, in a seeded shuffled order:
  suite-on   the suite's run_experiment with its monitors (NVML counter meter + power sampler thread)
  suite-off  the same with the monitors off (measurement.energy: none, sampler off)
  loop       tools/vllm_minimal_loop.py's measure(): plain LLM.generate, the same token ids and the
             same window rule, the NVML counter read at the window edges and nothing else
and the tool reports each side's tok/s over repeats (mean, SD, CV), the ratios suite-on/loop and
suite-on/suite-off with a 95% CI over the paired repeats (Student t).

    python tools/vllm_overhead.py --study studies/h200-overhead.yaml --repeats 5 --out DIR
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path
from typing import Any

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


def spread(values: list[float]) -> dict[str, Any]:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": mean, "sd": sd, "cv": sd / mean if sd is not None else None, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="a study with one vLLM experiment (the first is used)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _, experiments = load_study(args.study)
    on = experiments[0]
    off = monitors_off(on)
    pool = BackendPool()
    backend, _, load_s = pool.acquire(on.config)
    print(f"overhead: engine loaded in {load_s:.0f} s", file=sys.stderr, flush=True)
    workload = prepare_workload(on.config.workload, backend.tokenizer)
    measurement = on.config.measurement
    rng = random.Random(args.seed)
    runs: list[dict[str, Any]] = []
    for repeat in range(1, args.repeats + 1):
        order = ["suite-on", "suite-off", "loop"]
        rng.shuffle(order)
        for side in order:
            if side == "loop":
                row = loop.measure(backend.llm, workload.prompt_token_ids, workload.output_tokens,
                                   min_window_s=measurement.min_window_s, windows=measurement.cycles,
                                   warmup_passes=2, counter=loop.nvml_counter())
                row["cycles"] = [w["output_tokens_per_s"] for w in row.pop("windows")]
            else:
                backend.configure(on.config)
                row = suite(on if side == "suite-on" else off, backend)
            runs.append({"repeat": repeat, "side": side, **row})
            print(f"overhead: repeat {repeat} {side}: {row['output_tokens_per_s']:.1f} tok/s", file=sys.stderr, flush=True)
    pool.close()
    by_side = {s: [r for r in runs if r["side"] == s] for s in ("suite-on", "suite-off", "loop")}
    tps = {s: [r["output_tokens_per_s"] for r in rows] for s, rows in by_side.items()}
    summary = {
        "study": args.study, "test_id": on.test_id, "repeats": args.repeats, "seed": args.seed,
        "tokens_per_s": {s: spread(v) for s, v in tps.items()},
        "suite_on_vs_loop": ratio_ci(list(zip(tps["suite-on"], tps["loop"]))),
        "suite_on_vs_off": ratio_ci(list(zip(tps["suite-on"], tps["suite-off"]))),
        "suite_off_vs_loop": ratio_ci(list(zip(tps["suite-off"], tps["loop"]))),
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
