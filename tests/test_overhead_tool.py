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
