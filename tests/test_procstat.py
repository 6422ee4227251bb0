"""Server CPU from /proc (llem_bench/procstat.py), read from real processes: a child in its own
process group burning CPU under a name with spaces and a parenthesis, as a server's process title may be."""

import subprocess
import sys
import time

from llem_bench.procstat import cpu_use, group_cpu_seconds

BURN = """
import ctypes, time
ctypes.CDLL(None).prctl(15, b"api) server 1", 0, 0, 0)  # PR_SET_NAME
print("ready", flush=True)
end = time.process_time() + 0.6
while time.process_time() < end:
    pass
time.sleep(30)
"""


def test_group_cpu_counts_the_busy_leader_of_its_own_group():
    child = subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        before = group_cpu_seconds(child.pid)
        start = time.perf_counter()
        time.sleep(1.0)  # the child burns 0.6 s of CPU, part of it already before `before`
        after = group_cpu_seconds(child.pid)
        use = cpu_use(before, after, time.perf_counter() - start, child.pid)
    finally:
        child.kill()
        child.wait()
    assert list(after) == [child.pid]  # only the group's own process, not this test's
    (leader,) = use["processes"]
    assert leader["leader"] and leader["name"] == "api) server 1"
    assert 0.1 < leader["cpu_s"] <= 0.7 and 0.1 < leader["cpu_fraction"] < 0.75


def test_a_process_born_during_the_run_counts_from_zero_and_no_proc_has_a_reason():
    use = cpu_use({1: ("api", 2.0)}, {1: ("api", 2.5), 7: ("engine core", 1.5)}, 1.0, leader=1)
    assert [(p["pid"], p["cpu_s"], p["leader"]) for p in use["processes"]] == [(7, 1.5, False), (1, 0.5, True)]
    assert cpu_use(None, {}, 1.0, 1) == {"reason": "no /proc on this system"}
