"""After the CPU serving tier: the in-process engine (vLLM's AsyncLLM) measured its queueing delay from
vLLM's own per-request stamps (filled only with stats on), and it resolved the same step budget and
sequence limit as vLLM's server in the same study (the in-process engine is built with the server's
usage context). On this CPU both contexts happen to resolve 2048 tokens; on an H100/H200 the server takes
8192 and AsyncLLM's own default context 2048, which is what this guards.
    python .ci/check_serving.py .ci-reports/vllm-cpu-serving/<run>
"""
import json
import sys
from pathlib import Path

results = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("results/*.json"))]
inprocess = [r for r in results if r["effective"].get("engine") == "inprocess"]
servers = [r for r in results if r["effective"].get("engine") == "server"]
assert inprocess and servers, f"expected in-process and server results in {sys.argv[1]}"
for r in inprocess:
    assert r["metrics"].get("queue_time_ms_p50"), f"{r['test_id']}: no queueing delay: {r['unavailable']}"
    assert r["effective"].get("usage_context") == "OPENAI_API_SERVER", r["effective"]
for r in servers:
    assert r["effective"].get("settings_source") == "GET /server_info", f"{r['test_id']}: {r['effective']}"
keys = ("max_num_batched_tokens", "max_num_seqs")
resolved = {r["test_id"]: tuple(r["effective"]["scheduler"][k] for k in keys) for r in inprocess + servers}
assert len(set(resolved.values())) == 1, f"engines resolved different {keys}: {resolved}"
print(f"CI: serving engines agree on {dict(zip(keys, next(iter(resolved.values()))))}; in-process queueing "
      "delay measured from vLLM's stamps")
for r in servers:  # the server's processes, read from /proc over the run: the API server leads its group
    leader = [p for p in r["serving"]["server_cpu"].get("processes", []) if p["leader"]]
    assert leader and leader[0]["cpu_s"] > 0, f"{r['test_id']}: server CPU not measured: {r['serving']['server_cpu']}"
    assert r["metrics"].get("server_cpu_fraction"), f"{r['test_id']}: {r['unavailable'].get('server_cpu_fraction')}"
for r in inprocess:
    assert "in-process" in r["unavailable"].get("server_cpu_fraction", ""), r["unavailable"]
print("CI: server CPU measured per process: " + "; ".join(
    f"{r['test_id']}: " + ", ".join(f"{p['name']} {p['cpu_fraction']:.2f}" for p in r["serving"]["server_cpu"]["processes"][:3])
    for r in servers))
