"""The gate on real CPU runs with run-level repeats: five back-to-back A/A comparisons never say
REGRESSED, and a real slowdown (torch limited to one thread) is caught in the right direction.

Seven short pytest sessions of a one-experiment study (synthetic:tiny, 3 repeats of 3 half-second
cycles). The machine may be shared. Every session runs with OMP_WAIT_POLICY=passive: with the
default spinning OpenMP threads, a 2-thread torch on 2 oversubscribed cores ran at 4-30 tok/s
instead of ~600 (measured here with 8 busy processes), so the 2-thread baseline became the slow
side and load changes between sessions were amplified 20-fold. The gate is 20%: one thread instead
of two costs ~30% on an idle 2-core machine and more on a busy one; other helpers starting or
stopping between two sessions shift a fair CPU share by less."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STUDY = """\
study: gate-aa
model: synthetic:tiny
dtype: float32
workload: {num_prompts: 8, max_input_tokens: 32, output_tokens: 8}
measurement:
  cycles: 3
  warmup: {min_runs: 2, max_runs: 2}
  min_window_s: 0.5
  latency: false
  phases: false
  repeats: 3
  repeat_seed: 11
backends:
  pytorch: {batch_size: 8, device: cpu}
gates:
  on_inconclusive: warn
  output_tokens_per_s: {max_decrease: 20%}
"""

NOISY = 0.15   # a baseline run-to-run CV above this: a busy shared machine, not a quiet CI runner
ROW = re.compile(r"^\| output_tokens_per_s \(±20%\)\*.*$", re.M)


def _run(study: Path, out: Path, run_id: str, baseline: str | None = None, threads: int | None = None):
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)  # torch reads it at import: the worker's intra-op threads
    cmd = [sys.executable, "-m", "pytest", "benchmarks/pytorch/test_pytorch_energy.py", "--study", str(study),
           "--llem-out", str(out), "--llem-run-id", run_id, "-q", "-p", "no:cacheprovider", "--llem-allow-invalid"]
    if baseline:
        cmd += ["--llem-baseline", baseline]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _gated_row(run_dir: Path) -> list[str]:
    """The cells of the gated tok/s row of comparison.md."""
    match = ROW.search((run_dir / "comparison.md").read_text())
    assert match, (run_dir / "comparison.md").read_text()
    return [cell.strip() for cell in match.group(0).strip("|").split("|")]


@pytest.mark.slow
def test_back_to_back_aa_never_regresses_and_one_thread_does(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(STUDY)
    out = tmp_path / "reports"
    runs = out / "gate-aa"
    first = _run(study, out, "aa0")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = sorted((runs / "aa0" / "results").glob("*.json"))
    assert [p.name.rsplit("-", 1)[1] for p in results] == ["r1.json", "r2.json", "r3.json"]
    floor = json.loads((runs / "aa0" / "study.json").read_text())["noise_floor"]
    (entry,) = floor.values()
    assert entry["repeats"] == 3 and entry["metrics"]["output_tokens_per_s"]["n"] == 3

    lines = []
    for k in range(1, 6):   # A/A, each run against the one before it
        proc = _run(study, out, f"aa{k}", baseline=str(runs / f"aa{k - 1}"))
        report = proc.stdout + proc.stderr
        assert "REGRESSED" not in report, report[-4000:]
        assert proc.returncode == 0, report[-4000:]   # on_inconclusive: warn; nothing regressed
        row = _gated_row(runs / f"aa{k}")
        assert row[-1] in ("unchanged", "improved", "INCONCLUSIVE"), row
        lines.append(f"A/A {k}: {' | '.join(row)}")

    slow = _run(study, out, "one-thread", baseline=str(runs / "aa0"), threads=1)
    report = slow.stdout + slow.stderr
    row = _gated_row(runs / "one-thread")
    lines.append(f"A/B 1 thread: {' | '.join(row)}")
    print("\n".join(lines))
    assert row[-1] != "improved" and not row[5].startswith("+"), row   # never the wrong direction
    base_cv = entry["metrics"]["output_tokens_per_s"]["cv"]
    if row[-1] == "INCONCLUSIVE" and base_cv > NOISY:
        # the gate is right not to decide; on a quiet machine (CV of a few %) this branch is never taken
        pytest.xfail(f"machine too busy for 3 repeats: baseline run-to-run CV {base_cv:.0%} > {NOISY:.0%}; "
                     f"1 thread: {row[5]}, detectable change {row[8]}")
    assert slow.returncode == 1, report[-4000:]
    assert row[-1] == "REGRESSED" and row[5].startswith("-"), row   # tok/s went down
    assert re.search(r"REGRESSED: gate-aa|REGRESSED: pytorch-tiny-fp32-\S+: output_tokens_per_s -", report), report[-3000:]
