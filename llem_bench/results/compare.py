"""Baseline vs candidate: per-metric Welch t-tests with a minimum effect, and a regression gate.

A metric is *regressed* (or *improved*) only when the change is statistically significant
(Welch p < 0.05) AND larger than its threshold; *unchanged* when the 95% CI of the relative change
lies inside ±threshold; *inconclusive* otherwise (too few cycles, too much noise). One lucky
cycle cannot pass a gate and noise cannot fail it: both come out inconclusive.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from pydantic import ValidationError

from llem_bench.config.errors import did_you_mean
from llem_bench.config.study import GateSpec
from llem_bench.metrics import METRICS
from llem_bench.stats import mean, stdev, t95
from llem_bench.results.history import comparable
from llem_bench.results.format import fmt, markdown_table
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir

ALPHA = 0.05
DEFAULT_GATED = ("output_tokens_per_s", "energy_per_output_token_j", "energy_per_request_j", "requests_per_s")


# --- loading -------------------------------------------------------------------------------------

def load_side(path: str | Path) -> dict[str, ExperimentResult]:
    """A run folder (reports/<study>/<run-id>), its results/ folder, or one result JSON, by test_id."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder; pass a run folder (reports/<study>/<run-id>) "
                         "or a result JSON")
    if path.is_file():
        try:
            result = ExperimentResult.model_validate_json(path.read_text())
        except (ValidationError, ValueError) as exc:
            raise ValueError(f"{path}: not an ExperimentResult JSON ({str(exc).splitlines()[0]})") from None
        return {result.test_id: result}
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
    return {r.test_id: r for r in results}


# --- gates ---------------------------------------------------------------------------------------

def _fraction(percent: str) -> float:
    return float(percent.rstrip("%")) / 100.0


def gates_from(study_gates: Optional[dict[str, GateSpec]], default_pct: float = 5.0) -> dict[str, float]:
    """metric -> allowed change in the bad direction, as a fraction. Without study gates the headline
    metrics are gated at default_pct (wall time is fixed by min_window_s and memory is reported, not
    gated). The bad direction comes from METRICS (higher_is_better)."""
    if not study_gates:
        return {metric: default_pct / 100.0 for metric in DEFAULT_GATED}
    gates = {}
    for metric, spec in study_gates.items():
        if metric not in METRICS:
            raise ValueError(f"gates.{metric}: unknown metric.{did_you_mean(metric, list(METRICS))} "
                             f"Metrics: {', '.join(METRICS)}.")
        spec = spec if isinstance(spec, GateSpec) else GateSpec.model_validate(spec)
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


# --- statistics ----------------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for aa in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                   -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_cdf(t: float, df: float) -> float:
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


@dataclass
class MetricComparison:
    base_mean: Optional[float]
    cand_mean: Optional[float]
    delta_pct: Optional[float]                 # (cand - base) / |base| * 100
    ci95: Optional[tuple[float, float]]        # of cand_mean - base_mean, Welch
    ci95_pct: Optional[tuple[float, float]]    # the same relative to |base_mean|, in %
    p_value: Optional[float]                   # Welch t-test, two-sided
    df: Optional[float]                        # Welch-Satterthwaite degrees of freedom
    verdict: str                               # improved | regressed | unchanged | inconclusive
    threshold: float                           # minimum effect, fraction
    higher_is_better: bool
    n_base: int
    n_cand: int
    reason: str = ""


def compare_metric(base_values: Sequence[float], cand_values: Sequence[float], higher_is_better: bool,
                   threshold: float) -> MetricComparison:
    """Welch t-test of per-cycle values; `threshold` (a fraction) is the minimum effect that counts."""
    nb, nc = len(base_values), len(cand_values)
    mb = mean(base_values) if nb else None
    mc = mean(cand_values) if nc else None
    delta = (mc - mb) / abs(mb) * 100.0 if mb and mc is not None else None
    out = MetricComparison(mb, mc, delta, None, None, None, None, "inconclusive", threshold, higher_is_better, nb, nc)
    if nb < 2 or nc < 2:
        out.reason = f"needs at least 2 cycles on each side (baseline {nb}, candidate {nc})"
        return out
    if not mb:
        out.reason = "baseline mean is 0: no relative change"
        return out
    diff = mc - mb
    vb, vc = stdev(base_values) ** 2 / nb, stdev(cand_values) ** 2 / nc
    se = math.sqrt(vb + vc)
    if se == 0.0:
        out.df, out.p_value, half = float(nb + nc - 2), (1.0 if diff == 0 else 0.0), 0.0
    else:
        out.df = (vb + vc) ** 2 / (vb ** 2 / (nb - 1) + vc ** 2 / (nc - 1))
        out.p_value = t_two_sided_p(diff / se, out.df)
        half = t95(max(1, math.floor(out.df))) * se   # floor: the conservative side of the quantile
    out.ci95 = (diff - half, diff + half)
    out.ci95_pct = ((diff - half) / abs(mb) * 100.0, (diff + half) / abs(mb) * 100.0)
    limit = threshold * 100.0
    if out.p_value < ALPHA and abs(delta) > limit:
        out.verdict = "improved" if (diff > 0) == higher_is_better else "regressed"
    elif -limit <= out.ci95_pct[0] and out.ci95_pct[1] <= limit:
        out.verdict = "unchanged"
    else:
        out.reason = f"the 95% CI reaches past ±{limit:g}%: more cycles or less noise needed"
    return out


# --- runs ----------------------------------------------------------------------------------------

@dataclass
class ExperimentComparison:
    test_id: str                    # the candidate's test id
    base_test_id: str
    matched_by: str                 # "test_id" | "config_hash"
    metrics: dict[str, MetricComparison] = field(default_factory=dict)
    gated: dict[str, bool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)   # metric -> why not compared
    failure: Optional[str] = None   # the candidate failed where the baseline succeeded

    @property
    def regressions(self) -> list[str]:
        return [m for m, c in self.metrics.items() if c.verdict == "regressed" and self.gated.get(m)]


@dataclass
class Comparison:
    experiments: list[ExperimentComparison]
    only_base: list[str]
    only_cand: list[str]
    warnings: list[str]
    gates: dict[str, float]

    @property
    def regressions(self) -> list[tuple[str, str]]:
        """(test_id, metric) of every gated regression; a failed candidate counts as ('<test_id>', 'status')."""
        out = []
        for exp in self.experiments:
            out += [(exp.test_id, "status")] if exp.failure else []
            out += [(exp.test_id, m) for m in exp.regressions]
        return out

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


def _match(base: dict[str, ExperimentResult], cand: dict[str, ExperimentResult]):
    """Pairs by test_id, then by config_hash where it is unique among the leftovers of both sides."""
    pairs = [(base[t], cand[t], "test_id") for t in cand if t in base]
    rest_b = [r for t, r in base.items() if t not in cand]
    rest_c = [r for t, r in cand.items() if t not in base]
    by_hash_b, by_hash_c = Counter(r.config_hash for r in rest_b), Counter(r.config_hash for r in rest_c)
    unique = {h for h in by_hash_c if by_hash_c[h] == 1 and by_hash_b.get(h) == 1}
    lookup_b = {r.config_hash: r for r in rest_b if r.config_hash in unique}
    pairs += [(lookup_b[r.config_hash], r, "config_hash") for r in rest_c if r.config_hash in unique]
    only_b = sorted(r.test_id for r in rest_b if r.config_hash not in unique)
    only_c = sorted(r.test_id for r in rest_c if r.config_hash not in unique)
    return pairs, only_b, only_c


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _pair_warnings(b: ExperimentResult, c: ExperimentResult) -> list[str]:
    """Environment, resolved-config and prompt-set differences between a matched pair."""
    _, reasons = comparable(b, c)
    warnings = [f"ENVIRONMENT MISMATCH: {reason}" for reason in reasons]
    cb = _flat({k: v for k, v in b.config.items() if k != "study"})
    cc = _flat({k: v for k, v in c.config.items() if k != "study"})
    changed = [f"{k}: {cb.get(k)!r} -> {cc.get(k)!r}" for k in sorted(set(cb) | set(cc)) if cb.get(k) != cc.get(k)]
    if changed:
        warnings.append(f"CONFIG DIFFERS for {c.test_id}: " + ", ".join(changed))
    if b.workload.get("fingerprint") != c.workload.get("fingerprint"):
        warnings.append(f"WORKLOAD DIFFERS for {c.test_id}: prompt fingerprint {b.workload.get('fingerprint')} "
                        f"vs {c.workload.get('fingerprint')}")
    return warnings


def _compare_pair(b: ExperimentResult, c: ExperimentResult, how: str, gates: dict[str, float],
                  default: float, warnings: list[str]) -> ExperimentComparison:
    exp = ExperimentComparison(test_id=c.test_id, base_test_id=b.test_id, matched_by=how)
    if b.status != "ok" or c.status != "ok":
        if b.status == "ok":
            exp.failure = f"candidate failed: {c.error}"
        reason = f"baseline {b.status}, candidate {c.status}"
        exp.skipped = {m: reason for m in METRICS}
        return exp
    for metric, definition in METRICS.items():
        higher_is_better = definition.higher_is_better
        sb, sc = b.metrics.get(metric), c.metrics.get(metric)
        exp.gated[metric] = metric in gates
        if sb is None or sc is None:
            side, res = ("baseline", b) if sb is None else ("candidate", c)
            exp.skipped[metric] = f"null in the {side}: {res.unavailable.get(metric, 'not measured')}"
            if sb is not None and metric in gates:
                warnings.append(f"GATED METRIC LOST: {c.test_id}: {metric} was measured in the baseline but is null "
                                f"in the candidate ({c.unavailable.get(metric, 'not measured')})")
            continue
        exp.metrics[metric] = compare_metric(sb.values, sc.values, higher_is_better, gates.get(metric, default))
    return exp


def compare_runs(base: dict[str, ExperimentResult], cand: dict[str, ExperimentResult],
                 gates: Optional[dict[str, float]] = None, default_pct: float = 5.0) -> Comparison:
    """Match experiments by test_id (then config_hash) and compare every metric. `gates` (from gates_from)
    says which metrics can fail the comparison and by how much; the others use default_pct and only report."""
    gates = gates_from(None, default_pct) if gates is None else gates
    pairs, only_b, only_c = _match(base, cand)
    warnings: list[str] = []
    experiments = []
    for b, c, how in pairs:
        warnings += _pair_warnings(b, c)
        experiments.append(_compare_pair(b, c, how, gates, default_pct / 100.0, warnings))
    if not pairs:
        warnings.append("NO EXPERIMENTS MATCHED: nothing was compared")
    if only_b:
        warnings.append(f"{len(only_b)} baseline experiment(s) missing from the candidate: {', '.join(only_b)}")
    if only_c:
        warnings.append(f"{len(only_c)} candidate experiment(s) without a baseline: {', '.join(only_c)}")
    return Comparison(experiments, only_b, only_c, list(dict.fromkeys(warnings)), gates)


# --- report --------------------------------------------------------------------------------------

def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _ci(c: MetricComparison) -> str:
    if c.ci95 is None or c.ci95_pct is None:
        return "n/a"
    return f"{fmt(c.ci95[0])} .. {fmt(c.ci95[1])} ({_pct(c.ci95_pct[0])} .. {_pct(c.ci95_pct[1])})"


def render_comparison_markdown(comparison: Comparison) -> str:
    lines = ["# Comparison: baseline vs candidate", ""]
    lines += [f"> **WARNING** {w}" for w in comparison.warnings] + ([""] if comparison.warnings else [])
    lines += [f"Verdicts: significant = Welch p < {ALPHA} and |change| above the threshold; unchanged = the 95% CI "
              "of the change lies within ±threshold. Gated metrics are marked *; only they can fail.", ""]
    head = ["metric", "unit", "baseline", "candidate", "delta %", "95% CI of difference", "p", "verdict"]
    for exp in comparison.experiments:
        title = exp.test_id if exp.test_id == exp.base_test_id else f"{exp.test_id} (baseline {exp.base_test_id})"
        lines += [f"## {title}", ""]
        if exp.failure:
            lines += [f"**REGRESSION: {exp.failure}**", ""]
        rows = []
        for metric, c in exp.metrics.items():
            verdict = c.verdict.upper() if c.verdict == "regressed" and exp.gated[metric] else c.verdict
            threshold = f" (±{c.threshold * 100:g}%)" + ("*" if exp.gated[metric] else "")
            rows.append([metric + threshold, METRICS[metric].unit, fmt(c.base_mean), fmt(c.cand_mean), _pct(c.delta_pct),
                         _ci(c), "n/a" if c.p_value is None else f"{c.p_value:.3g}", verdict])
        if rows:
            lines += [markdown_table(head, rows), ""]
        notes: dict[str, list[str]] = {}
        for metric, reason in exp.skipped.items():
            notes.setdefault(f"not compared: {reason}", []).append(metric)
        for metric, c in exp.metrics.items():
            if c.reason:
                notes.setdefault(f"inconclusive: {c.reason}", []).append(metric)
        lines += [f"- {', '.join(ms)}: {note}" for note, ms in notes.items()] + ([""] if notes else [])
    n = len(comparison.regressions)
    lines.append(f"GATE: FAIL ({n} regression{'s' if n != 1 else ''})" if n else "GATE: PASS")
    return "\n".join(lines) + "\n"
