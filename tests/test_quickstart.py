"""The README's main job, end to end on the CPU with the real tiny model."""

import json


def test_quickstart_study_runs_and_reports(quickstart_run):
    proc, run = quickstart_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # 4 experiments plus the PyTorch wiring checks, which `pytest benchmarks` also runs
    assert " passed" in proc.stdout and " failed" not in proc.stdout and "llem-bench results" in proc.stdout
    results = [json.loads(p.read_text()) for p in (run / "results").glob("*.json")]
    assert len(results) == 4
    for r in results:
        assert r["status"] == "ok" and r["token_check"]["ok"]
        assert r["metrics"]["output_tokens_per_s"]["mean"] > 0
        assert r["metrics"]["energy_per_output_token_j"] is None  # CPU: null with a reason, never 0
        assert r["unavailable"]["energy_per_output_token_j"]
    assert {(r["config"]["dtype"], r["effective"]["batch_size"]) for r in results} == {
        ("float32", 1), ("float32", 8), ("bfloat16", 1), ("bfloat16", 8)}
    # progress on the terminal despite -q: experiment k/N, load, warmup passes, each cycle
    out = proc.stdout
    assert "llem-bench [1/4] " in out and "llem-bench [4/4] " in out and "[5/4]" not in out
    for line in ("loading synthetic:tiny on pytorch", "warmup 1 (at most 2): pass took ", "warmup 2 (at most 2)",
                 "cycle 3/3: measuring a window of >= 1 s", "streaming passes for latency: 3", ": done: "):
        assert line in out, line
    assert out.count(": starting (inprocess)") == 4 and out.count("cycle 1/3: measuring") == 4
    report = (run / "report.md").read_text()
    assert all(f"| {r['test_id']} |" in report for r in results)
