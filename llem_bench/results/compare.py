"""Baseline vs candidate with run-level variance, and the regression gate.

The unit of replication is a run (a repeat, measurement.repeats), never a cycle: cycles share one
process, one model load and one thermal state, and their spread leaves out the run-to-run noise that
dominates real GPUs (the audit: two runs of one workload came out "REGRESSED" at p = 4e-4 from cycles).
Per experiment and metric the per-repeat means of both sides are compared:

- both sides have >= 2 repeats: Welch's t-test over the per-repeat means;
- one side has 1 repeat: that run against the other side's between-repeat SD (its noise floor), with
  se = SD x sqrt(1/n_base + 1/n_cand): with one candidate run, a prediction-interval test;
- neither side has repeats: inconclusive, "no run-level variance: run with measurement.repeats >= 2".

Verdicts: *regressed* / *improved* = the change is beyond the threshold in that direction AND
significant (p < 0.05); a change beyond the threshold that is not significant is *inconclusive*;
*unchanged* = within the threshold and the 95% CI's bad end too (so noise cannot pass a real
regression); otherwise *inconclusive*. A baseline from another GPU or machine widens the floor
(CROSS_MACHINE_FLOOR_CV). The gate fails on a gated regression, a failed or missing experiment, a lost
gated metric, an invalid result (unless allowed) and, with gates.on_inconclusive: fail (the default),
on a gated inconclusive metric.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import ValidationError

from llem_bench.config.errors import did_you_mean
from llem_bench.config.experiment import RUN_LEVEL_MEASUREMENT
from llem_bench.config.study import GateSpec
from llem_bench.metrics import HOST_BOUND_PCT, METRICS
from llem_bench.results.format import fmt, markdown_table
from llem_bench.results.history import comparable
from llem_bench.results.repeats import by_test_id
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir
from llem_bench.stats import (ALPHA, POWER, against_noise_floor, cv, mean, minimum_detectable, repeats_needed, stdev,
                              welch_df_factor, welch_from_stats)

# One metric of each collinear family: with a fixed output length output_tokens_per_s and requests_per_s
# move together, and so do J/token and J/request; gating both would count one change twice.
DEFAULT_GATED = ("output_tokens_per_s", "energy_per_output_token_j")
# A baseline from another GPU or host: the run-to-run CV used is at least this. Identical settings on two
# H200s gave 50k and 46k tok/s (vLLM, batch 256, shared/gpu/README.md): an 8% gap that one machine's
# repeats never see. 5% per side keeps such a pair from reading as a regression at a 5% gate while a
# 10%+ change still shows with a few repeats.
CROSS_MACHINE_FLOOR_CV = 0.05
NO_VARIANCE = "no run-level variance: run with measurement.repeats >= 2"
ON_INCONCLUSIVE = ("fail", "warn")

Side = dict[str, list[ExperimentResult]]


# --- loading -------------------------------------------------------------------------------------

def load_side(path: str | Path) -> Side:
    """A run folder (reports/<study>/<run-id>), its results/ folder, or one result JSON: test_id -> its
    results (one per repeat, in repeat order)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder; pass a run folder (reports/<study>/<run-id>) "
                         "or a result JSON")
    if path.is_file():
        try:
            result = ExperimentResult.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"{path}: not an ExperimentResult JSON ({str(exc).splitlines()[0]})") from None
        return {result.test_id: [result]}
    run = RunDir(path.parent if path.name == "results" and not (path / "results").is_dir() else path)
    if not run.results_dir.is_dir():
        runs = sorted(p.parent.name for p in path.glob("*/results"))
        hint = f"; it holds runs {', '.join(runs)}: pass one of them" if runs else ""
        raise ValueError(f"{path}: not a run folder (no results/ inside){hint}")
    results, problems = run.read_results_with_problems()
    if problems:
        raise ValueError("unreadable results:\n" + "\n".join(problems))
    if not results:
        raise ValueError(f"{run.results_dir}: no result files; did the run finish any experiment?")
    return by_test_id(results)


# --- gates ---------------------------------------------------------------------------------------

def _fraction(percent: str) -> float:
    return float(percent.rstrip("%")) / 100.0


def gates_from(study_gates: Optional[dict[str, Any]], default_pct: float = 5.0) -> dict[str, float]:
    """metric -> allowed change in the bad direction, as a fraction. Without metric gates DEFAULT_GATED
    are gated at default_pct (wall time is fixed by min_window_s and memory is reported, not gated).
    The bad direction comes from METRICS (higher_is_better). `on_inconclusive` is read by policy_from."""
    specs = {k: v for k, v in (study_gates or {}).items() if k != "on_inconclusive"}
    if not specs:
        return {metric: default_pct / 100.0 for metric in DEFAULT_GATED}
    gates = {}
    for metric, spec in specs.items():
        if metric not in METRICS:
            raise ValueError(f"gates.{metric}: unknown metric.{did_you_mean(metric, list(METRICS))} "
                             f"Metrics: {', '.join(METRICS)}.")
        spec = spec if isinstance(spec, GateSpec) else GateSpec.model_validate(spec or {})
        higher_is_better = METRICS[metric].higher_is_better
        bad, good = ("max_decrease", "max_increase") if higher_is_better else ("max_increase", "max_decrease")
        if getattr(spec, bad) is not None:
            gates[metric] = _fraction(getattr(spec, bad))
        elif getattr(spec, good) is not None:
            raise ValueError(f"gates.{metric}: {good} limits an improvement; {metric} is "
                             f"{'higher' if higher_is_better else 'lower'}-is-better, so a regression is "
                             f"{'a decrease' if higher_is_better else 'an increase'}: use {bad}")
        else:
            gates[metric] = default_pct / 100.0
    return gates


def policy_from(study_gates: Optional[dict[str, Any]]) -> str:
    """gates.on_inconclusive: fail (default) or warn."""
    policy = (study_gates or {}).get("on_inconclusive", "fail")
    if policy not in ON_INCONCLUSIVE:
        raise ValueError(f"gates.on_inconclusive: expected fail or warn, got {policy!r}")
    return policy


# --- one metric ----------------------------------------------------------------------------------

@dataclass
class MetricComparison:
    base_mean: Optional[float]
    cand_mean: Optional[float]
    delta_pct: Optional[float]                 # (cand - base) / |base| * 100
    ci95: Optional[tuple[float, float]]        # of cand_mean - base_mean
    ci95_pct: Optional[tuple[float, float]]    # the same relative to |base_mean|, in %
    p_value: Optional[float]                   # two-sided
    df: Optional[float]
    verdict: str                               # improved | regressed | unchanged | inconclusive
    threshold: float                           # minimum effect, fraction
    higher_is_better: bool
    n_base: int                                # repeats (runs), not cycles
    n_cand: int
    reason: str = ""
    method: str = ""                           # which test, on what
    mdc_pct: Optional[float] = None            # minimum detectable change (alpha 0.05, power 0.8), % of base
    repeats_for_threshold: Optional[int] = None  # repeats per side that would detect the threshold
    floor_cv: Optional[float] = None           # the CV floor applied (another machine), else None


def _sd(values: Sequence[float], floor_cv: Optional[float]) -> Optional[float]:
    s = stdev(values)
    if s is None or floor_cv is None:
        return s
    return max(s, floor_cv * abs(mean(values)))


def compare_metric(base_values: Sequence[float], cand_values: Sequence[float], higher_is_better: bool,
                   threshold: float, floor_cv: Optional[float] = None) -> MetricComparison:
    """Compare per-repeat means (one value per run). `threshold` (a fraction) is the minimum effect that
    counts; `floor_cv` (a fraction) is a lower bound on the run-to-run CV of both sides."""
    nb, nc = len(base_values), len(cand_values)
    mb = mean(base_values) if nb else None
    mc = mean(cand_values) if nc else None
    delta = (mc - mb) / abs(mb) * 100.0 if mb and mc is not None else None
    out = MetricComparison(mb, mc, delta, None, None, None, None, "inconclusive", threshold, higher_is_better,
                           nb, nc, floor_cv=floor_cv)
    if not nb or not nc:
        out.reason = f"no values (baseline {nb}, candidate {nc} repeats)"
        return out
    if not mb:
        out.reason = "baseline mean is 0: no relative change"
        return out
    sb, sc = _sd(base_values, floor_cv), _sd(cand_values, floor_cv)
    if sb is None and sc is None:
        out.reason = NO_VARIANCE
        out.method = "one run per side"
        return out
    if sb is not None and sc is not None:
        d = welch_from_stats(mb, sb, nb, mc, sc, nc)
        sd_pooled = math.sqrt((sb ** 2 + sc ** 2) / 2)
        df_factor = welch_df_factor(sb, sc)
        out.method = f"Welch over per-repeat means ({nb} vs {nc} repeats)"
    else:
        sd, n_sd, side = (sb, nb, "baseline") if sb is not None else (sc, nc, "candidate")
        d = against_noise_floor(mb, nb, mc, nc, sd, n_sd - 1)
        sd_pooled, df_factor = sd, 2.0
        out.method = (f"{'candidate' if side == 'baseline' else 'baseline'} run against the {side}'s "
                      f"between-repeat SD ({n_sd} repeats; prediction interval)")
    if floor_cv is not None:
        out.method += f"; CV floored at {floor_cv:.0%} (another machine)"
    out.df, out.p_value, out.ci95 = d.df, d.p_value, d.ci95
    out.ci95_pct = (d.ci95[0] / abs(mb) * 100.0, d.ci95[1] / abs(mb) * 100.0)
    out.mdc_pct = minimum_detectable(d.se, d.df) / abs(mb) * 100.0 if d.se else 0.0
    out.repeats_for_threshold = repeats_needed(sd_pooled, threshold * abs(mb), df_factor=df_factor)
    limit = threshold * 100.0
    bad_end = -out.ci95_pct[0] if higher_is_better else out.ci95_pct[1]   # worst change the CI allows, in %
    if abs(delta) > limit and d.p_value < ALPHA:
        out.verdict = "improved" if (d.diff > 0) == higher_is_better else "regressed"
    elif abs(delta) > limit:
        out.reason = (f"{delta:+.1f}% is beyond ±{limit:g}% but not significant (p = {d.p_value:.2g}); "
                      + _power_note(out))
    elif bad_end <= limit:
        out.verdict = "unchanged"
    else:
        out.reason = (f"the 95% CI allows a {bad_end:.1f}% change in the bad direction, past {limit:g}%; "
                      + _power_note(out))
    return out


def _power_note(c: MetricComparison) -> str:
    need = c.repeats_for_threshold
    return (f"detectable change {c.mdc_pct:.1f}% (alpha {ALPHA:g}, power {POWER:g}); "
            + (f"{need} repeats per side would detect ±{c.threshold * 100:g}%" if need is not None
               else f"over 1000 repeats per side would be needed for ±{c.threshold * 100:g}%"))


# --- runs ----------------------------------------------------------------------------------------

@dataclass
class ExperimentComparison:
    test_id: str                    # the candidate's test id
    base_test_id: str
    matched_by: str                 # "test_id" | "config_hash" | "--pair"
    metrics: dict[str, MetricComparison] = field(default_factory=dict)
    gated: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # metric -> why not compared
    failure: Optional[str] = None   # the candidate failed where the baseline succeeded
    invalid: Optional[str] = None   # invalid results on either side (not compared unless allowed)
    lost: list[str] = field(default_factory=list)            # gated metrics measured only in the baseline
    n_base: int = 0
    n_cand: int = 0

    @property
    def regressions(self) -> list[str]:
        return [m for m, c in self.metrics.items() if c.verdict == "regressed" and self.gated.get(m)]

    @property
    def inconclusive(self) -> list[str]:
        return [m for m, c in self.metrics.items() if c.verdict == "inconclusive" and self.gated.get(m)]


@dataclass
class Comparison:
    experiments: list[ExperimentComparison]
    only_base: list[str]
    only_cand: list[str]
    warnings: list[str]
    gates: dict[str, float]
    on_inconclusive: str = "fail"
    allow_invalid: bool = False

    @property
    def regressions(self) -> list[tuple[str, str]]:
        """(test_id, metric) of every gated regression; a failed candidate counts as ('<test_id>', 'status')."""
        out = []
        for exp in self.experiments:
            out += [(exp.test_id, "status")] if exp.failure else []
            out += [(exp.test_id, m) for m in exp.regressions]
        return out

    @property
    def inconclusive(self) -> list[tuple[str, str, str]]:
        """(test_id, metric, reason) of every gated metric the comparison could not decide."""
        return [(exp.test_id, m, exp.metrics[m].reason) for exp in self.experiments for m in exp.inconclusive]

    @property
    def failures(self) -> list[str]:
        """Every reason the gate fails, one line each."""
        out = []
        for exp in self.experiments:
            if exp.failure:
                out.append(f"FAILED: {exp.test_id}: {exp.failure}")
            if exp.invalid and not self.allow_invalid:
                out.append(f"INVALID: {exp.test_id}: {exp.invalid} (not compared; --llem-allow-invalid compares it)")
            out += [f"GATED METRIC LOST: {exp.test_id}: {m}" for m in exp.lost]
            for m in exp.regressions:
                c = exp.metrics[m]
                out.append(f"REGRESSED: {exp.test_id}: {m} {_pct(c.delta_pct)} (p = {c.p_value:.2g}, "
                           f"gate ±{c.threshold * 100:g}%)")
        out += [f"MISSING: {t}: in the baseline, not in the candidate" for t in self.only_base]
        if not self.experiments:
            out.append("NO EXPERIMENTS MATCHED: nothing was compared")
        if self.on_inconclusive == "fail":
            out += [f"INCONCLUSIVE: {t}: {m}: {why}" for t, m, why in self.inconclusive]
        return out

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def gate_line(self) -> str:
        failures = self.failures
        if failures:
            kinds = Counter(f.split(":", 1)[0].lower() for f in failures)
            return "GATE: FAIL (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"
        if self.inconclusive:
            return f"GATE: PASS with {len(self.inconclusive)} inconclusive gated metric(s) (gates.on_inconclusive: warn)"
        return "GATE: PASS"

    @property
    def loud_warnings(self) -> list[str]:
        """The warnings, plus each inconclusive gated metric when on_inconclusive is warn."""
        extra = [] if self.on_inconclusive == "fail" else \
            [f"INCONCLUSIVE (on_inconclusive: warn): {t}: {m}: {why}" for t, m, why in self.inconclusive]
        return self.warnings + extra


def _match(base: Side, cand: Side):
    """Pairs by test_id, then by config_hash where it is unique among the leftovers of both sides."""
    pairs = [(base[t], cand[t], "test_id") for t in cand if t in base]
    rest_b = [runs for t, runs in base.items() if t not in cand]
    rest_c = [runs for t, runs in cand.items() if t not in base]
    by_hash_b = Counter(runs[0].config_hash for runs in rest_b)
    by_hash_c = Counter(runs[0].config_hash for runs in rest_c)
    unique = {h for h in by_hash_c if by_hash_c[h] == 1 and by_hash_b.get(h) == 1}
    lookup_b = {runs[0].config_hash: runs for runs in rest_b if runs[0].config_hash in unique}
    pairs += [(lookup_b[runs[0].config_hash], runs, "config_hash") for runs in rest_c if runs[0].config_hash in unique]
    only_b = sorted(runs[0].test_id for runs in rest_b if runs[0].config_hash not in unique)
    only_c = sorted(runs[0].test_id for runs in rest_c if runs[0].config_hash not in unique)
    return pairs, only_b, only_c


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _identity(r: ExperimentResult) -> tuple[str, tuple[str, ...]]:
    """(host, GPU UUIDs of the experiment, else of the host) of a result."""
    gpus = r.energy.get("gpus") or (r.environment.get("nvml") or {}).get("gpus") or []
    return str(r.environment.get("host") or "?"), tuple(sorted(str(g.get("uuid")) for g in gpus if g.get("uuid")))


def other_machine(b: ExperimentResult, c: ExperimentResult) -> Optional[str]:
    """Why the two results come from different hardware (host name or GPU UUIDs), or None."""
    (hb, gb), (hc, gc) = _identity(b), _identity(c)
    reasons = []
    if gb != gc:
        reasons.append(f"GPU UUIDs {', '.join(gb) or 'none'} vs {', '.join(gc) or 'none'}")
    if hb != hc:
        reasons.append(f"host {hb} vs {hc}")
    return "; ".join(reasons) or None


# Settings an engine resolves itself where a study leaves them unset, with defaults that differ by entry
# point (vLLM's offline LLM, its AsyncLLM and its server): a pair that differs here is not like for like.
ENGINE_SETTINGS = ("scheduler.max_num_batched_tokens", "scheduler.max_num_seqs", "scheduler.enable_chunked_prefill",
                   "scheduler.async_scheduling", "model.enforce_eager", "compilation.mode", "compilation.cudagraph_mode",
                   "cache.enable_prefix_caching", "cache.cache_dtype", "cache.block_size")


def _pair_warnings(b: ExperimentResult, c: ExperimentResult) -> list[str]:
    """Environment, resolved-config and prompt-set differences between a matched pair."""
    _, reasons = comparable(b, c)
    warnings = [f"ENVIRONMENT MISMATCH: {reason}" for reason in reasons]
    run_level = {f"measurement.{k}" for k in RUN_LEVEL_MEASUREMENT}
    cb = _flat({k: v for k, v in b.config.items() if k != "study"})
    cc = _flat({k: v for k, v in c.config.items() if k != "study"})
    changed = [f"{k}: {cb.get(k)!r} -> {cc.get(k)!r}" for k in sorted(set(cb) | set(cc))
               if cb.get(k) != cc.get(k) and k not in run_level]
    if changed:
        warnings.append(f"CONFIG DIFFERS for {c.test_id}: " + ", ".join(changed))
    eb, ec = _flat(b.effective or {}), _flat(c.effective or {})
    resolved = [f"{k}: {eb[k]!r} -> {ec[k]!r}" for k in ENGINE_SETTINGS
                if eb.get(k) is not None and ec.get(k) is not None and eb[k] != ec[k]]
    if resolved:
        warnings.append(f"ENGINE SETTINGS DIFFER for {c.test_id} (as the engines resolved them, not as the study set "
                        "them): " + ", ".join(resolved))
    if b.workload.get("fingerprint") != c.workload.get("fingerprint"):
        warnings.append(f"WORKLOAD DIFFERS for {c.test_id}: prompt fingerprint {b.workload.get('fingerprint')} "
                        f"vs {c.workload.get('fingerprint')}")
    return warnings


def _window_memory(r: ExperimentResult) -> bool:
    """peak_memory_mb is comparable only where it is measured per window (not the CPU's process-lifetime
    ru_maxrss: its method says 'since start')."""
    return "window" in (r.peak_memory_method or "") and "since start" not in (r.peak_memory_method or "")


def _invalid(side: str, runs: list[ExperimentResult]) -> list[str]:
    return [f"{side} {r.key} is invalid ({'; '.join(r.validity.get('reasons') or []) or 'no reason recorded'})"
            for r in runs if r.status == "ok" and r.validity.get("verdict") == "invalid"]


def _compare_pair(b_runs: list[ExperimentResult], c_runs: list[ExperimentResult], how: str,
                  gates: dict[str, float], default: float, warnings: list[str], allow_invalid: bool,
                  floor_cv: Optional[float]) -> ExperimentComparison:
    c0 = c_runs[0]
    exp = ExperimentComparison(test_id=c0.test_id, base_test_id=b_runs[0].test_id, matched_by=how)
    b_ok = [r for r in b_runs if r.status == "ok"]
    c_ok = [r for r in c_runs if r.status == "ok"]
    exp.n_base, exp.n_cand = len(b_ok), len(c_ok)
    failed = [r for r in c_runs if r.status != "ok"]
    if failed and b_ok:
        exp.failure = "candidate failed: " + "; ".join(f"{r.key}: {r.error}" for r in failed)
    if not b_ok or not c_ok:
        reason = f"no successful run (baseline {len(b_ok)}/{len(b_runs)}, candidate {len(c_ok)}/{len(c_runs)})"
        exp.skipped = {m: reason for m in METRICS}
        return exp
    invalid = _invalid("baseline", b_ok) + _invalid("candidate", c_ok)
    if invalid:
        exp.invalid = "; ".join(invalid)
        if not allow_invalid:
            exp.skipped = {m: "invalid results are not compared (--llem-allow-invalid compares them)" for m in METRICS}
            return exp
        warnings.append(f"INVALID RESULTS COMPARED (--llem-allow-invalid): {exp.invalid}")
    for metric, definition in METRICS.items():
        exp.gated[metric] = metric in gates
        if metric == "peak_memory_mb" and not all(_window_memory(r) for r in (b_ok[0], c_ok[0])):
            exp.skipped[metric] = (f"not a window measurement ({c_ok[0].peak_memory_method or b_ok[0].peak_memory_method}"
                                   "): reported, not compared")
            continue
        vb = [v for r in b_ok if (v := r.mean(metric)) is not None]
        vc = [v for r in c_ok if (v := r.mean(metric)) is not None]
        if not vb or not vc:
            side, res = ("baseline", b_ok[0]) if not vb else ("candidate", c_ok[0])
            exp.skipped[metric] = f"null in the {side}: {res.unavailable.get(metric, 'not measured')}"
            if vb and metric in gates:
                exp.lost.append(metric)
                warnings.append(f"GATED METRIC LOST: {c0.test_id}: {metric} was measured in the baseline but is "
                                f"null in the candidate ({c_ok[0].unavailable.get(metric, 'not measured')})")
            continue
        exp.metrics[metric] = compare_metric(vb, vc, definition.higher_is_better, gates.get(metric, default), floor_cv)
    if note := _host_bound_note(exp, b_runs, c_runs):
        warnings.append(note)
    return exp


def _host_bound_note(exp: ExperimentComparison, b_runs: list[ExperimentResult],
                     c_runs: list[ExperimentResult]) -> Optional[str]:
    """Why tok/s could not be decided, where the offline side ran host-bound: its repeats measured the host's
    speed as much as the GPU's (on the lent H200s, tok/s per GPU-busy percent varied 1-2% over repeats while
    raw tok/s varied 10-24%). Serving at a light rate idles the GPU by design, so only offline runs count."""
    tps = exp.metrics.get("output_tokens_per_s")
    runs = [r for r in b_runs + c_runs if r.status == "ok"]
    busy = [r.power.get("gpu_busy_pct") for r in runs]
    offline_busy = [b for r, b in zip(runs, busy) if (r.config.get("scenario") or "offline") == "offline" and b is not None]
    if tps is None or tps.verdict != "inconclusive" or not offline_busy or min(offline_busy) >= HOST_BOUND_PCT:
        return None
    spread = []
    for name, side in (("baseline", b_runs), ("candidate", c_runs)):
        pairs = [(tok, b) for r in side if r.status == "ok"
                 and (tok := r.mean("output_tokens_per_s")) is not None and (b := r.power.get("gpu_busy_pct"))]
        if len(pairs) >= 2:
            raw, per_busy = [t for t, _ in pairs], [t / b for t, b in pairs]
            spread.append(f"{name} {cv(per_busy) * 100:.1f}% against {cv(raw) * 100:.1f}% raw")
    known = [b for b in busy if b is not None]
    return (f"HOST-BOUND: {exp.test_id}: the GPU was busy {min(known):.0f}-{max(known):.0f}% of the windows, so "
            "tok/s and gross J/token follow the host's speed from repeat to repeat"
            + (f" (tok/s per GPU-busy percent varies {'; '.join(spread)} over repeats)" if spread else "")
            + "; net J/token, the GPU's work above idle, is the figure the host does not move "
            "(docs/methodology.md, what to gate on when the engine is host-bound)")


def _chosen_pair(base: Side, cand: Side, pair: tuple[str, str]):
    """One experiment of each side, named by the user (two settings of one run, e.g. in-process against
    server mode); the names are test ids without the repeat suffix."""
    for side, name, which in ((base, pair[0], "baseline"), (cand, pair[1], "candidate")):
        if name not in side:
            raise ValueError(f"--pair: no experiment {name!r} in the {which}; it has: {', '.join(sorted(side))}")
    return [(base[pair[0]], cand[pair[1]], "--pair")], [], []


def compare_runs(base: Side, cand: Side, gates: Optional[dict[str, float]] = None, default_pct: float = 5.0,
                 on_inconclusive: str = "fail", allow_invalid: bool = False,
                 pair: Optional[tuple[str, str]] = None) -> Comparison:
    """Match experiments by test_id (then config_hash), or compare only the `pair` (baseline id, candidate
    id) named, and compare every metric over the repeats of both sides. `gates` (from gates_from) says which
    metrics can fail the comparison and by how much; the others use default_pct and only report."""
    gates = gates_from(None, default_pct) if gates is None else gates
    if on_inconclusive not in ON_INCONCLUSIVE:
        raise ValueError(f"on_inconclusive: expected fail or warn, got {on_inconclusive!r}")
    pairs, only_b, only_c = _chosen_pair(base, cand, pair) if pair else _match(base, cand)
    warnings: list[str] = []
    experiments = []
    for b_runs, c_runs, how in pairs:
        warnings += _pair_warnings(b_runs[0], c_runs[0])
        machine = other_machine(b_runs[0], c_runs[0])
        floor = None
        if machine:
            floor = CROSS_MACHINE_FLOOR_CV
            warnings.append(f"OTHER MACHINE: {c_runs[0].test_id}: the baseline ran on other hardware ({machine}); "
                            f"run-to-run CV floored at {CROSS_MACHINE_FLOOR_CV:.0%} per side (identical settings "
                            "gave 46k vs 50k tok/s on two H200s)")
        experiments.append(_compare_pair(b_runs, c_runs, how, gates, default_pct / 100.0, warnings, allow_invalid,
                                         floor))
    if not pairs:
        warnings.append("NO EXPERIMENTS MATCHED: nothing was compared")
    if only_b:
        warnings.append(f"{len(only_b)} baseline experiment(s) missing from the candidate: {', '.join(only_b)}")
    if only_c:
        warnings.append(f"{len(only_c)} candidate experiment(s) without a baseline: {', '.join(only_c)}")
    return Comparison(experiments, only_b, only_c, list(dict.fromkeys(warnings)), gates, on_inconclusive,
                      allow_invalid)


# --- report --------------------------------------------------------------------------------------

def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _ci(c: MetricComparison) -> str:
    if c.ci95 is None or c.ci95_pct is None:
        return "n/a"
    return f"{fmt(c.ci95[0])} .. {fmt(c.ci95[1])} ({_pct(c.ci95_pct[0])} .. {_pct(c.ci95_pct[1])})"


def shown_verdict(c: MetricComparison, gated: bool) -> str:
    return c.verdict.upper() if gated and c.verdict in ("regressed", "inconclusive") else c.verdict


def metric_row(metric: str, c: MetricComparison, gated: bool) -> list[str]:
    """One comparison table row (markdown and HTML share it)."""
    threshold = f" (±{c.threshold * 100:g}%)" + ("*" if gated else "")
    return [metric + threshold, METRICS[metric].unit if metric in METRICS else "", fmt(c.base_mean), fmt(c.cand_mean),
            f"{c.n_base} / {c.n_cand}", _pct(c.delta_pct), _ci(c), "n/a" if c.p_value is None else f"{c.p_value:.3g}",
            "n/a" if c.mdc_pct is None else f"{c.mdc_pct:.1f}%",
            "n/a" if c.mdc_pct is None else (str(c.repeats_for_threshold) if c.repeats_for_threshold else ">1000"),
            shown_verdict(c, gated)]


COMPARISON_HEAD = ["metric", "unit", "baseline", "candidate", "repeats (base / cand)", "delta %",
                   "95% CI of difference", "p", "detectable change", "repeats for threshold", "verdict"]
EXPLANATION = (f"Each value is the mean over repeats of the per-repeat means (a repeat is one run: "
               f"measurement.repeats); the cycles of one run are never the replicates. regressed / improved = "
               f"|change| beyond the threshold and p < {ALPHA:g}; beyond the threshold but not significant = "
               f"inconclusive; unchanged = the 95% CI's bad end within the threshold. Detectable change: the "
               f"smallest change this comparison finds with power {POWER:g} at alpha {ALPHA:g}; repeats for "
               f"threshold: repeats per side that would find a change of the threshold. Gated metrics are "
               f"marked *; only they can fail the gate.")


def gated_summary(comparison: Comparison) -> list[str]:
    """One line per experiment and gated metric: change, verdict, detectable change, repeats needed."""
    lines = []
    for exp in comparison.experiments:
        for metric, c in exp.metrics.items():
            if not exp.gated.get(metric):
                continue
            mdc = "n/a" if c.mdc_pct is None else f"{c.mdc_pct:.1f}%"
            need = "n/a" if c.mdc_pct is None else (str(c.repeats_for_threshold) if c.repeats_for_threshold else ">1000")
            lines.append(f"{exp.test_id}: {metric} {_pct(c.delta_pct)} ({c.n_base} vs {c.n_cand} repeats) "
                         f"{shown_verdict(c, True)}; detectable change {mdc}; repeats to detect "
                         f"±{c.threshold * 100:g}%: {need}")
    return lines


def render_comparison_markdown(comparison: Comparison) -> str:
    lines = ["# Comparison: baseline vs candidate", ""]
    warnings = comparison.loud_warnings
    lines += [f"> **WARNING** {w}" for w in warnings] + ([""] if warnings else [])
    lines += [EXPLANATION, ""]
    for exp in comparison.experiments:
        title = exp.test_id if exp.test_id == exp.base_test_id else f"{exp.test_id} (baseline {exp.base_test_id})"
        lines += [f"## {title}", ""]
        if exp.failure:
            lines += [f"**REGRESSION: {exp.failure}**", ""]
        if exp.invalid:
            lines += [f"**INVALID: {exp.invalid}**", ""]
        methods = sorted({c.method for c in exp.metrics.values() if c.method})
        if methods:
            lines += [f"Test: {'; '.join(methods)}.", ""]
        rows = [metric_row(metric, c, bool(exp.gated.get(metric))) for metric, c in exp.metrics.items()]
        if rows:
            lines += [markdown_table(COMPARISON_HEAD, rows), ""]
        notes: dict[str, list[str]] = {}
        for metric, reason in exp.skipped.items():
            notes.setdefault(f"not compared: {reason}", []).append(metric)
        for metric, c in exp.metrics.items():
            if c.reason:
                notes.setdefault(f"inconclusive: {c.reason}", []).append(metric)
        lines += [f"- {', '.join(ms)}: {note}" for note, ms in notes.items()] + ([""] if notes else [])
    failures = comparison.failures
    if failures:
        lines += ["## Why the gate fails", "", *[f"- {f}" for f in failures], ""]
    lines.append(comparison.gate_line)
    return "\n".join(lines) + "\n"
