"""tools/vllm_overhead.py keeps what a run cut by a time limit measured: --from-log rebuilds the summary
from the 'overhead: repeat' lines, over the repeats every side completed (pure logic, no engine)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_summary_from_a_cut_log_uses_only_complete_repeats(tmp_path):
    log = tmp_path / "overhead.log"
    log.write_text("\n".join([
        "overhead: engine loaded in 190 s",
        "overhead: repeat 1 suite-on: 110.0 tok/s", "overhead: repeat 1 loop: 100.0 tok/s",
        "overhead: repeat 1 suite-off: 100.0 tok/s",
        "overhead: repeat 2 loop: 100.0 tok/s", "overhead: repeat 2 suite-off: 100.0 tok/s",
        "overhead: repeat 2 suite-on: 130.0 tok/s",
        "overhead: repeat 3 suite-on: 999.0 tok/s",  # cut here: repeat 3 has one side only
    ]))
    subprocess.run([sys.executable, str(REPO / "tools" / "vllm_overhead.py"), "--study", "studies/h200-overhead.yaml",
                    "--repeats", "5", "--from-log", str(log), "--out", str(tmp_path / "out")],
                   cwd=REPO, check=True, capture_output=True)
    summary = json.loads((tmp_path / "out" / "overhead.json").read_text())
    assert summary["repeats_asked"] == 5 and summary["repeats_complete"] == 2
    assert summary["tokens_per_s"]["suite-on"]["values"] == [110.0, 130.0]
    on_vs_loop = summary["suite_on_vs_loop"]
    assert abs(on_vs_loop["mean"] - 0.2) < 1e-9 and on_vs_loop["n"] == 2 and len(on_vs_loop["ci95"]) == 2
    assert len(summary["runs"]) == 7  # every line kept, the incomplete repeat too


def test_host_cpu_split_from_two_proc_stat_readings():
    sys.path.insert(0, str(REPO / "tools"))
    from vllm_overhead import host_cpu_split, host_cpu_times

    # user nice system idle iowait irq softirq steal: 100 jiffies, 50 idle + 10 iowait, 20 stolen
    split = host_cpu_split([0] * 8, [10, 0, 10, 50, 10, 0, 0, 20])
    assert split["host_busy_share"] == 0.4 and split["host_steal_share"] == 0.2
    assert host_cpu_split(None, [1] * 8) == {"host_cpu": "unavailable (no /proc/stat)"}
    assert len(host_cpu_times() or []) >= 8  # this Linux host has it


def test_power_line_separates_the_host_state_from_the_gpu_work_per_token():
    """Sides at different speeds on one line (resident 110 W + 6.8 mJ/token): equal net J/token, zero residuals;
    a loop that spends 5% more GPU energy per token shows as +5% net J/token against suite-on's."""
    sys.path.insert(0, str(REPO / "tools"))
    from vllm_overhead import power_line

    def side(repeat, name, tps, net_j=0.0068):
        return {"repeat": repeat, "side": name, "output_tokens_per_s": tps,
                "energy_per_output_token_j": (110.0 + net_j * tps) / tps}

    same = [side(1, "suite-on", 30_000), side(1, "loop", 52_000), side(2, "suite-on", 50_000), side(2, "loop", 31_000)]
    line = power_line(same, [1, 2])
    assert abs(line["resident_w"] - 110.0) < 1e-6 and abs(line["net_j_per_token"] - 0.0068) < 1e-9
    assert abs(line["suite_on_vs_loop_net_j_per_token"]["mean"]) < 1e-9
    assert all(abs(v) < 1e-6 for s in line["sides"].values() for v in s["residual_w"]["values"])

    heavier = [side(1, "suite-on", 30_000), side(1, "loop", 30_500, 0.00714), side(2, "suite-on", 50_000),
               side(2, "loop", 49_000, 0.00714), side(3, "suite-on", 40_000), side(3, "loop", 41_000, 0.00714)]
    line = power_line(heavier, [1, 2, 3])
    assert line["sides"]["loop"]["net_j_per_token"]["mean"] > line["sides"]["suite-on"]["net_j_per_token"]["mean"]
    assert line["suite_on_vs_loop_net_j_per_token"]["mean"] < -0.03  # suite-on ~5% below the loop
    assert power_line([side(1, "loop", 30_000)], [1]) is None  # one point is not a line
