"""pytest hooks of scale-out, loaded by llem_bench.plugin (pytest_plugins): --llem-gpus-per-worker
(one disjoint GPU set per xdist worker), --dist loadgroup by load key, and --llem-shard i/N.

All checks run in the controller before any worker starts or any model loads.
"""

from __future__ import annotations

from typing import Optional

import pytest

from llem_bench.scaleout.gpus import NodeGpus, check_experiments_fit, gpus_needed, node_gpus, plan_workers, \
    worker_environment
from llem_bench.scaleout.shard import group_name, parse_shard, shard_test_ids

PLAN_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "llem-bench: LLM inference energy benchmarks")
    group.addoption("--llem-gpus-per-worker", dest="llem_gpus_per_worker", type=int, metavar="K",
                    help="with pytest-xdist (-n N): give each worker its own K GPUs (CUDA_VISIBLE_DEVICES), "
                         "N x K must not exceed the visible GPUs; -n auto starts (visible GPUs // K) workers")
    group.addoption("--llem-shard", dest="llem_shard", metavar="I/N",
                    help="run shard I of N (1-based) of the study: whole load groups, the same split on every "
                         "machine; join the shard runs with `llem-bench merge`")


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Optional[int]:
    """-n auto with --llem-gpus-per-worker K: one worker per K visible GPUs (CPU count otherwise)."""
    per_worker = config.getoption("llem_gpus_per_worker", None)
    if not per_worker:
        return None
    gpus = node_gpus()
    return max(len(gpus.tokens) // per_worker, 1) if gpus.tokens else None


@pytest.hookimpl(trylast=True)  # after llem_bench.plugin has read the study
def pytest_configure(config: pytest.Config) -> None:
    from llem_bench.plugin import SESSION_KEY

    llem = config.stash.get(SESSION_KEY, None)
    experiments = llem.experiments if llem is not None and llem.study is not None else []
    plan: dict = {"notes": []}
    config.stash[PLAN_KEY] = plan
    shard = config.getoption("llem_shard", None)
    if shard:
        if not experiments:
            raise pytest.UsageError("--llem-shard needs a study (--study FILE)")
        try:
            index, count = parse_shard(shard)
            plan["shard"] = (index, count, shard_test_ids(experiments, index, count))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    if hasattr(config, "workerinput"):
        return  # a worker: the controller checked the rest and set this worker's environment
    per_worker = config.getoption("llem_gpus_per_worker", None)
    workers = config.getoption("numprocesses", None) or 0
    dist = config.getoption("dist", "no")
    if per_worker is not None and per_worker < 1:
        raise pytest.UsageError(f"--llem-gpus-per-worker must be 1 or more, got {per_worker}")
    if per_worker and not workers:
        raise pytest.UsageError(
            f"--llem-gpus-per-worker {per_worker} pins each pytest-xdist worker to its own GPUs: add -n N (N workers), "
            f"e.g. -n 2 --llem-gpus-per-worker {per_worker}. Without -n, the one pytest process uses every visible GPU.")
    if not experiments:
        return
    if workers:
        _choose_dist(config, dist, plan)
        plan["gpus"] = _check_gpus(workers, per_worker, experiments, plan)
        plan.update(workers=workers, per_worker=per_worker)
    elif any(gpus_needed(e.config) for e in experiments):
        gpus = node_gpus()
        if gpus.tokens:
            try:
                check_experiments_fit(experiments, len(gpus.tokens))
            except ValueError as exc:
                raise pytest.UsageError(str(exc).replace("a worker has", "this process sees")) from None


def _choose_dist(config: pytest.Config, dist: str, plan: dict) -> None:
    if dist == "each":
        raise pytest.UsageError("--dist each would run every experiment on every worker into one run folder; "
                                "use the default (llem-bench switches it to --dist loadgroup)")
    if dist == "load":  # xdist's default with -n: upgrade, so a load group's experiments share one worker
        config.option.dist = "loadgroup"
        plan["notes"].append("--dist loadgroup: experiments that share a loaded model run on one worker")
    elif dist != "loadgroup":
        plan["notes"].append(f"--dist {dist}: experiments of one load group may land on different workers and load "
                             "the model again; leave --dist out to get loadgroup")


def _check_gpus(workers: int, per_worker: Optional[int], experiments: list, plan: dict) -> NodeGpus:
    gpus = node_gpus()
    if not gpus.tokens:
        if per_worker:
            plan["notes"].append(f"no GPUs visible ({gpus.reason}): --llem-gpus-per-worker {per_worker} ignored, "
                                 f"the {workers} workers are not pinned")
        return gpus
    if not per_worker:
        if workers > 1:
            raise pytest.UsageError(
                f"-n {workers} on a host with {len(gpus.tokens)} GPU(s): the workers would share GPUs and meter each "
                f"other's work. Add --llem-gpus-per-worker K (K x {workers} <= {len(gpus.tokens)}).")
        return gpus
    try:
        plan_workers(len(gpus.tokens), workers, per_worker)
        check_experiments_fit(experiments, per_worker)
    except ValueError as exc:
        raise pytest.UsageError(f"{exc} (visible GPUs: {', '.join(gpus.tokens)}, from {gpus.source})") from None
    plan["notes"].append(f"{workers} workers x {per_worker} GPU(s) of {len(gpus.tokens)} visible ({gpus.source})")
    return gpus


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """loadgroup with pytest-xdist's crash fixes (see scaleout.xdist_scheduling), for study runs."""
    from llem_bench.plugin import SESSION_KEY

    llem = config.stash.get(SESSION_KEY, None)
    if config.getvalue("dist") != "loadgroup" or llem is None or llem.study is None:
        return None
    from llem_bench.scaleout.xdist_scheduling import CrashSafeLoadGroupScheduling

    return CrashSafeLoadGroupScheduling(config, log, _load_group_of_nodeid(llem.experiments))


def _load_group_of_nodeid(experiments: list):
    """node id -> load group name, from the experiment id in its brackets (also `<id>-r<k>` repeats)."""
    from llem_bench.backends import load_key
    from llem_bench.plugin import _PARAM_ID

    groups = {e.test_id: group_name(load_key(e.config)) for e in experiments}

    def scope_of(nodeid: str) -> Optional[str]:
        match = _PARAM_ID.search(nodeid)
        if not match:
            return None
        param = match.group(1)
        hits = [t for t in groups if t == param or t in param]
        return groups[max(hits, key=len)] if hits else None

    return scope_of


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list) -> None:
    """Each worker slot's environment: its GPUs and what its results record (see scaleout.gpus)."""
    plan = config.stash.get(PLAN_KEY, {})
    if "gpus" not in plan:
        return
    for slot, spec in enumerate(specs):
        spec.env.update(worker_environment(slot, len(specs), plan["per_worker"], plan["gpus"]))


@pytest.hookimpl(tryfirst=True)  # before xdist adds the group to the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from llem_bench.plugin import _experiment_of
    from llem_bench.backends import load_key

    plan = config.stash.get(PLAN_KEY, {})
    shard = plan.get("shard")
    keep, drop = [], []
    for item in items:
        experiment = _experiment_of(item)
        if experiment is not None:
            item.add_marker(pytest.mark.xdist_group(name=group_name(load_key(experiment.config))))
        if shard and (experiment.test_id not in shard[2] if experiment is not None else shard[0] != 1):
            drop.append(item)  # tests that are not experiments (wiring checks) run in shard 1 only
            continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionstart(session: pytest.Session) -> None:
    """The scale-out notes (dist mode, GPU pinning or why not), shown also with -q."""
    if hasattr(session.config, "workerinput"):
        return
    for note in session.config.stash.get(PLAN_KEY, {}).get("notes", []):
        session.config.get_terminal_writer().line(f"llem-bench: {note}", yellow=True)


def pytest_report_header(config: pytest.Config) -> Optional[list[str]]:
    plan = config.stash.get(PLAN_KEY, {})
    lines = []
    if plan.get("shard"):
        index, count, ids = plan["shard"]
        lines.append(f"llem-bench: shard {index}/{count}: {len(ids)} experiment(s)")
    return lines or None


@pytest.hookimpl(tryfirst=True)  # before llem_bench.plugin finishes the manifest
def pytest_sessionfinish(session: pytest.Session) -> None:
    from llem_bench.plugin import SESSION_KEY

    llem = session.config.stash.get(SESSION_KEY, None)
    plan = session.config.stash.get(PLAN_KEY, {})
    if llem is None or llem.manifest is None:
        return
    if plan.get("shard"):
        index, count, ids = plan["shard"]
        llem.manifest.data["shard"] = {"index": index, "count": count, "test_ids": sorted(ids)}
    if plan.get("workers"):
        llem.manifest.data["xdist"] = {"workers": plan["workers"], "gpus_per_worker": plan["per_worker"],
                                       "dist": session.config.option.dist, "notes": plan["notes"]}


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem: str, report, sched) -> None:
    """A worker died mid-experiment: xdist reports the test failed (as phase '???', which the manifest
    reporter does not take for a final report), so the manifest records the failure here."""
    from llem_bench.plugin import SESSION_KEY

    llem = sched.config.stash.get(SESSION_KEY, None)
    reporter = sched.config.pluginmanager.get_plugin("llem-manifest")
    if llem is None or llem.manifest is None or reporter is None:
        return
    test_id = reporter.test_id_of(crashitem)
    if test_id is not None:
        worker = getattr(getattr(report, "node", None), "gateway", None)
        llem.manifest.end(test_id, "failed", reason=f"worker {getattr(worker, 'id', '?')} crashed (the process died) "
                          "while running this experiment; no result was written")
