"""pytest plugin: study YAML -> one parametrised test per experiment -> result JSON + report.

Options: --study/--llem-study, --llem-out, --llem-run-id. Fixtures: llem_experiment (the grid
point), llem_run (measures it and writes its result), llem_session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from llem_bench.backends import load_key
from llem_bench.config.backends import BACKENDS
from llem_bench.config.errors import ConfigError
from llem_bench.config.preflight import preflight
from llem_bench.config.study import Experiment, load_study
from llem_bench.results.compare import load_side
from llem_bench.results.gate import gate_against_baseline
from llem_bench.results.report import header, summary_rows, write_reports
from llem_bench.session import LlemSession

EXIT_INTERRUPTED = 130  # what shells report for SIGINT; CI scripts can tell "stopped" from "failed"

SESSION_KEY = pytest.StashKey["LlemSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llem", "llem-bench: LLM inference energy benchmarks")
    group.addoption("--study", "--llem-study", dest="llem_study", metavar="YAML",
                    help="study file: every grid point becomes one test (see studies/quickstart.yaml)")
    group.addoption("--llem-out", dest="llem_out", default="reports", metavar="DIR",
                    help="output root; results go to DIR/<study>/<run-id>/ (default: reports)")
    group.addoption("--llem-run-id", dest="llem_run_id", metavar="ID",
                    help="name of the run folder (default: UTC timestamp and commit)")
    group.addoption("--llem-baseline", dest="llem_baseline", metavar="RUN",
                    help="compare with this earlier run folder (or result JSON) and fail the session (exit 1) "
                         "on a significant regression beyond the study's gates: (default 5%% on headline metrics)")
    group.addoption("--llem-runner", dest="llem_runner", metavar="RUNNER",
                    help="where experiments run: inprocess, subprocess or venv:<python> (overrides "
                         "LLEM_RUNNER_<BACKEND> and the study's runners:)")
    group.addoption("--llem-timeout", dest="llem_timeout", type=float, default=3600.0, metavar="SECONDS",
                    help="per-experiment limit for subprocess/venv/docker runners; the worker's process group is "
                         "killed (default: 3600)")
    group.addoption("--llem-resume", dest="llem_resume", metavar="RUN_DIR",
                    help="continue an interrupted run: experiments with a complete result there are skipped")
    group.addoption("--llem-max-residual-mb", dest="llem_max_residual_mb", type=float, default=1024.0,
                    metavar="MIB", help="GPU memory other processes may hold before an experiment (default 1024)")
    group.addoption("--llem-residual", dest="llem_residual", choices=["warn", "fail"], default="warn",
                    help="what to do above --llem-max-residual-mb (default warn)")
    group.addoption("--llem-settle-s", dest="llem_settle_s", type=float, default=60.0, metavar="SECONDS",
                    help="wait up to this long before each experiment for GPU power to return near the "
                         "session's idle level; 0 disables (default 60)")
    group.addoption("--llem-docker-shm", dest="llem_docker_shm", default="8g", metavar="SIZE",
                    help="--shm-size of docker: runners (default 8g; vLLM needs a large one)")
    group.addoption("--llem-docker-ipc-host", dest="llem_docker_ipc_host", action="store_true",
                    help="use --ipc=host instead of --shm-size for docker: runners")


def pytest_configure(config: pytest.Config) -> None:
    for backend in BACKENDS:
        config.addinivalue_line("markers", f"{backend}: llem-bench experiment on the {backend} backend")
    config.addinivalue_line("markers", "llem(backend, model, dtype): llem-bench experiment (select with -m)")
    config.addinivalue_line("markers", "llem_backend(name): the backend whose study experiments this test runs")
    study, experiments = None, []
    path = config.getoption("llem_study", None)
    if path:
        try:
            study, experiments = load_study(path)
            preflight(experiments, str(path))
        except ConfigError as exc:
            raise pytest.UsageError(f"invalid study:\n{exc}") from None
    resume = config.getoption("llem_resume", None)
    if resume and not (Path(resume) / "results").is_dir():
        raise pytest.UsageError(f"--llem-resume: {resume} is not a run folder (no results/ inside); pass "
                                "reports/<study>/<run-id>")
    try:
        config.stash[SESSION_KEY] = LlemSession(config, study, experiments)
    except ConfigError as exc:
        raise pytest.UsageError(f"invalid runner:\n{exc}") from None
    baseline = config.getoption("llem_baseline", None)
    if baseline:
        try:
            load_side(baseline)  # fail now, not after hours of measuring
        except ValueError as exc:
            raise pytest.UsageError(f"--llem-baseline: {exc}") from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: every worker writes into the controller's run folder."""
    session = node.config.stash[SESSION_KEY]
    if session.run_dir is not None:
        node.workerinput["llem_run_id"] = session.run_dir.path.name


def pytest_report_header(config: pytest.Config) -> Optional[list[str]]:
    session = config.stash[SESSION_KEY]
    if session.study is None:
        return None
    return [f"llem-bench: study '{session.study.study}' ({len(session.experiments)} experiments) "
            f"-> {session.run_dir.path}"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "llem_experiment" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash[SESSION_KEY]
    marker = metafunc.definition.get_closest_marker("llem_backend")
    backend = marker.args[0] if marker else None
    if session.study is None:
        params = [pytest.param(None, id="no-study", marks=pytest.mark.skip(
            reason="no study given: run with --study <file>, e.g. --study studies/quickstart.yaml"))]
    else:
        chosen = [e for e in session.experiments if backend is None or e.backend == backend]
        params = [pytest.param(e, id=e.test_id, marks=[
            getattr(pytest.mark, e.backend),
            pytest.mark.llem(backend=e.backend, model=e.config.model, dtype=e.config.dtype)]) for e in chosen]
        if not params:
            params = [pytest.param(None, id=f"no-{backend}-experiments", marks=pytest.mark.skip(
                reason=f"study '{session.study.study}' has no {backend} experiments"))]
    metafunc.parametrize("llem_experiment", params)


def _experiment_of(item: pytest.Item) -> Optional[Experiment]:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("llem_experiment") if callspec else None
    return value if isinstance(value, Experiment) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group experiments that share load settings so the model loads once per group; on resume,
    skip the experiments that already have a complete result."""
    slots = [i for i, item in enumerate(items) if _experiment_of(item) is not None]
    ordered = sorted((items[i] for i in slots), key=lambda it: load_key(_experiment_of(it).config))
    for slot, item in zip(slots, ordered):
        items[slot] = item
    session = config.stash[SESSION_KEY]
    for item in ordered:
        reason = session.already_done.get(_experiment_of(item).test_id)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    llem = session.config.stash[SESSION_KEY]
    if llem.run_dir is None or not llem.is_controller:
        return
    selected = [e.test_id for e in map(_experiment_of, session.items) if e is not None]
    if selected:
        llem.open_manifest(selected)
    for problem in llem.resume_problems:
        session.config.get_terminal_writer().line(f"llem-bench: {problem}", yellow=True)


@pytest.fixture(scope="session")
def llem_session(pytestconfig: pytest.Config) -> LlemSession:
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture
def llem_run(llem_session: LlemSession):
    """Measure an experiment; its ExperimentResult JSON is written before this returns."""
    return llem_session.run


def pytest_sessionfinish(session: pytest.Session) -> None:
    llem = session.config.stash.get(SESSION_KEY, None)
    if llem is None or llem.run_dir is None:
        return
    interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
    llem.close(interrupted)
    if interrupted:
        session.exitstatus = EXIT_INTERRUPTED
    if not llem.is_controller or not llem.run_dir.results_dir.is_dir():
        return
    write_reports(llem.run_dir)
    baseline = session.config.option.llem_baseline
    if baseline and not interrupted and llem.run_dir.read_results():
        llem.comparison = gate_against_baseline(baseline, llem.run_dir, llem.study.gates)
        if llem.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    llem = config.stash.get(SESSION_KEY, None)
    if llem is None or llem.run_dir is None or not llem.run_dir.results_dir.is_dir():
        return
    results = llem.run_dir.read_results()
    if not results:
        return
    terminalreporter.section("llem-bench results")
    rows = [header()[:2] + ["out tok/s", "J/out tok", "avg W", "wall s"]]
    for row in summary_rows(results):
        rows.append([row[0], row[1], row[2], row[3], row[5], row[7]])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for row in rows:
        terminalreporter.write_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    terminalreporter.write_line(f"report: {llem.run_dir.path / 'report.md'}")
    comparison = getattr(llem, "comparison", None)
    if comparison is not None:
        terminalreporter.section("llem-bench baseline comparison")
        for warning in comparison.warnings:
            terminalreporter.write_line(f"WARNING: {warning}", yellow=True)
        for test_id, metric in comparison.regressions:
            terminalreporter.write_line(f"REGRESSED: {test_id}: {metric}", red=True)
        verdict = f"GATE: FAIL ({len(comparison.regressions)} regression(s))" if comparison.failed else "GATE: PASS"
        terminalreporter.write_line(f"{verdict} -- {llem.run_dir.path / 'comparison.md'}",
                                    red=comparison.failed, green=not comparison.failed)
