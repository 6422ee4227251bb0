"""pytest plugin: study YAML -> one parametrised test per experiment -> result JSON + report.

Options: see `pytest --help`, group llem. Fixtures: llem_experiment (the grid point), llem_run
(measures it and writes its result), llem_session. The controller process (the only one without
xdist) keeps the run's manifest.json from the test reports: pending -> running -> done / failed /
skipped, and the run's state; Ctrl-C or SIGTERM end the session as an interrupted run, with exit
status 128 + the signal number (130, 143).
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

from llem_bench.config.backends import BACKENDS
from llem_bench.config.errors import ConfigError
from llem_bench.config.preflight import preflight
from llem_bench import progress
from llem_bench.config.study import Experiment, load_study
from llem_bench.results.compare import gated_summary, load_side
from llem_bench.results.gate import gate_against_baseline
from llem_bench.results.manifest import Manifest
from llem_bench.results.report import header, summary_rows, write_reports
from llem_bench.session import LlemSession

# Exit status of an interrupted run: 128 + the signal, as shells report it, so a CI script can tell
# "stopped" (130 for Ctrl-C, 143 for SIGTERM) from "failed".
STOP_SIGNAL_KEY = pytest.StashKey[int]()

SESSION_KEY = pytest.StashKey["LlemSession"]()

# Scale-out (xdist GPU pinning, load groups, shards) lives in its own hooks module.
pytest_plugins = ["llem_bench.scaleout.pytest_hooks"]


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
                         "on a significant regression beyond the study's gates: (default 5%% on output tok/s and "
                         "J/token), a missing experiment or gated metric, an invalid result, or (gates."
                         "on_inconclusive: fail, the default) a gated metric it cannot decide; needs run-level "
                         "variance: measurement.repeats >= 2 on one side at least")
    group.addoption("--llem-allow-invalid", dest="llem_allow_invalid", action="store_true",
                    help="accept results whose validity verdict is 'invalid': benchmark tests pass on them and the "
                         "gate compares them (with a warning) instead of failing")
    group.addoption("--llem-runner", dest="llem_runner", metavar="RUNNER",
                    help="where experiments run: inprocess, subprocess, venv:<python> or docker:<image> (overrides "
                         "LLEM_RUNNER_<BACKEND> and the study's runners:; default: subprocess on a host with "
                         "GPUs, inprocess without)")
    group.addoption("--llem-timeout", dest="llem_timeout", type=float, default=3600.0, metavar="SECONDS",
                    help="per-experiment limit for subprocess/venv/docker runners; the worker's process group is "
                         "killed (default: 3600)")
    group.addoption("--llem-resume", dest="llem_resume", metavar="RUN_DIR",
                    help="continue an interrupted run in that folder (same run id): experiments with a complete "
                         "status-ok result there are skipped, the others (or a truncated result) run again")
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
    import llem_bench.testing

    llem_bench.testing.ALLOW_INVALID = bool(config.getoption("llem_allow_invalid", False))
    study, experiments, notes = None, [], []
    path = config.getoption("llem_study", None)
    if path:
        try:
            study, experiments = load_study(path)
            notes = preflight(experiments, str(path))
        except ConfigError as exc:
            raise pytest.UsageError(f"invalid study:\n{exc}") from None
    _check_resume(config, study)
    try:
        llem = config.stash[SESSION_KEY] = LlemSession(config, study, experiments)
    except ConfigError as exc:
        raise pytest.UsageError(f"invalid runner or launch:\n{exc}") from None
    llem.preflight_notes = notes
    if llem.run_dir is not None and llem.is_controller:
        config.pluginmanager.register(ManifestReporter(llem), "llem-manifest")
        previous = progress.set_sink(_terminal_status(config, llem))
        config.add_cleanup(lambda: progress.set_sink(previous))
    if llem.run_dir is not None and threading.current_thread() is threading.main_thread():
        _stop_like_ctrl_c_on_sigterm(config)
    baseline = config.getoption("llem_baseline", None)
    if baseline:
        try:
            load_side(baseline)  # fail now, not after hours of measuring
        except ValueError as exc:
            raise pytest.UsageError(f"--llem-baseline: {exc}") from None


def _terminal_status(config: pytest.Config, llem: LlemSession):
    """Progress lines on the terminal, also with -q: written with output capture suspended (as
    pytest's live logging does), each prefixed with the running experiment's k/N and id. While a
    worker measures a window, a terminal (not a log) gets a countdown rewritten in place every
    second, from this process: the worker prints nothing inside its window."""
    window: dict = {}

    def terminal():
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            raise RuntimeError("no terminal")  # progress.status falls back to stderr
        capture = config.pluginmanager.get_plugin("capturemanager")
        return reporter, capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()

    def write(message: str, window_s: Optional[float] = None) -> None:
        reporter, uncaptured = terminal()
        prefix = f"llem-bench {llem.current + ': ' if llem.current else ''}"
        window.clear()
        if window_s:
            window.update(until=time.monotonic() + window_s, label=prefix + message.split(":")[0])
        with uncaptured:
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.write("\n")  # -q prints its dots (or a countdown) without a newline
            reporter.write_line(prefix + message)

    def countdown() -> None:
        left = window["until"] - time.monotonic() if window else 0
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if left < 1 or reporter is None or not reporter.isatty:
            return
        try:
            with terminal()[1]:
                reporter.rewrite(f"{window['label']}: >= {left:.0f} s left in the window", erase=True)
        except Exception:
            pass  # a countdown must never disturb the run

    llem.on_idle = countdown
    return write


def _stop_like_ctrl_c_on_sigterm(config: pytest.Config) -> None:
    """A timeout, a cancelled CI job or systemd sends SIGTERM: stop the running experiment and its
    worker's process group and keep what finished, as Ctrl-C does (by default SIGTERM would end pytest
    on the spot and leave the workers and their GPU memory behind)."""
    def stop(signum, frame):
        config.stash[STOP_SIGNAL_KEY] = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, previous))


def _check_resume(config: pytest.Config, study) -> None:
    resume = config.getoption("llem_resume", None)
    if not resume:
        return
    if not (Path(resume) / "results").is_dir():
        raise pytest.UsageError(f"--llem-resume: {resume} is not a run folder (no results/ inside); pass "
                                "reports/<study>/<run-id>")
    if config.getoption("llem_run_id", None):
        raise pytest.UsageError("--llem-resume reuses that folder's run id; leave out --llem-run-id")
    earlier = Manifest.read(Path(resume))
    if study is not None and earlier and earlier.get("study") not in (None, study.study):
        raise pytest.UsageError(f"--llem-resume: {resume} is a run of study '{earlier['study']}', not "
                                f"'{study.study}'; pass the study it was started with")


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
    repeats = session.study.repeats
    times = f" x {repeats} repeats (seed {session.study.repeat_seed})" if repeats > 1 else ""
    return [f"llem-bench: study '{session.study.study}' ({len(session.experiments)} experiments{times}) "
            f"-> {session.run_dir.path}"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """What the pre-flight checks could not verify here, shown also with -q (the header is not)."""
    llem = session.config.stash.get(SESSION_KEY, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for note in (llem.preflight_notes if llem is not None and reporter is not None else []):
        reporter.write_line(f"llem-bench: note: {note}", yellow=True)


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
        chosen = [e for e in session.plan if backend is None or e.backend == backend]
        params = [pytest.param(e, id=e.key, marks=[
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
    """Run experiments in the session's plan (harness/order.py): grouped by load settings so the model
    loads once per group, repeat by repeat in a seeded shuffled order; on resume, skip the runs that
    already have a complete result."""
    session = config.stash[SESSION_KEY]
    position = {e.key: i for i, e in enumerate(session.plan)}
    slots = [i for i, item in enumerate(items) if _experiment_of(item) is not None]
    ordered = sorted((items[i] for i in slots),
                     key=lambda it: position.get(_experiment_of(it).key, len(position)))
    for slot, item in zip(slots, ordered):
        items[slot] = item
    for item in ordered:
        reason = session.already_done.get(_experiment_of(item).key)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_finish(session: pytest.Session) -> None:
    llem = session.config.stash[SESSION_KEY]
    to_run = {e.test_id for e in map(_experiment_of, session.items) if e is not None}
    llem.planned = len(to_run - set(llem.already_done))
    reporter = session.config.pluginmanager.get_plugin("llem-manifest")
    if reporter is not None:
        reporter.open([item.nodeid for item in session.items])


_PARAM_ID = re.compile(r"\[(.*)\](@[^\]]*)?$")  # test[<id>], plus xdist's @<group> suffix under loadgroup


class ManifestReporter:
    """Keeps manifest.json from the test reports; registered in the controller only, so under xdist
    one process writes it (logstart/logreport reach the controller from every worker)."""

    def __init__(self, llem: LlemSession):
        self.llem = llem

    def open(self, nodeids: list[str]) -> None:
        selected = [t for t in map(self.test_id_of, nodeids) if t is not None]
        if selected and not self.llem.config.option.collectonly:  # --collect-only writes nothing
            self.llem.open_manifest(selected)
        for problem in self.llem.resume_problems:
            self.llem.config.get_terminal_writer().line(f"llem-bench: {problem}", yellow=True)

    def test_id_of(self, nodeid: str) -> Optional[str]:
        match = _PARAM_ID.search(nodeid)
        if not match:
            return None
        known, param = self.llem.run_keys, match.group(1)
        if param in known:
            return param
        # run keys of several parametrisations combined; the longest first (x-r1 is part of x-r10)
        return next((t for t in sorted(known, key=len, reverse=True) if t in param), None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """xdist: the controller collects nothing itself; the first worker says what was selected."""
        if self.llem.manifest is None:
            self.open(ids)

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        test_id = self.test_id_of(nodeid)
        if test_id and self.llem.manifest is not None:
            self.llem.manifest.start(test_id)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test_id = self.test_id_of(report.nodeid)
        manifest = self.llem.manifest
        final = report.when == "call" or (report.when == "setup" and not report.passed) or \
            (report.when == "teardown" and report.failed)
        if test_id is None or manifest is None or not final:
            return
        fields: dict = {}
        for key, value in report.user_properties:
            if key == "llem" and isinstance(value, dict):
                fields.update(value)
        if report.passed:
            manifest.end(test_id, "done", duration_s=round(report.duration, 2), **fields)
        elif report.skipped:
            manifest.end(test_id, "skipped", **{**fields, "reason": _skip_reason(report)})
        else:
            fields.setdefault("reason", _failure_reason(report))
            manifest.end(test_id, "failed", duration_s=round(report.duration, 2), **fields)


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)


def _failure_reason(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext or "failed"
    lines = [line for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "failed")[:500]


@pytest.fixture(scope="session")
def llem_session(pytestconfig: pytest.Config) -> LlemSession:
    return pytestconfig.stash[SESSION_KEY]


@pytest.fixture
def llem_run(llem_session: LlemSession, request: pytest.FixtureRequest):
    """Measure an experiment; its ExperimentResult JSON is written before this returns."""
    def run(experiment: Experiment):
        # user_properties travel with the test report, also from an xdist worker to the controller's manifest
        return llem_session.run(experiment, note=lambda **fields: request.node.user_properties.append(("llem", fields)))

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    llem = session.config.stash.get(SESSION_KEY, None)
    if llem is None or llem.run_dir is None:
        return
    interrupted = session.exitstatus == pytest.ExitCode.INTERRUPTED
    llem.close(interrupted)
    if interrupted:
        session.exitstatus = 128 + session.config.stash.get(STOP_SIGNAL_KEY, signal.SIGINT)
    if not llem.is_controller or not llem.run_dir.results_dir.is_dir():
        return
    write_reports(llem.run_dir)
    baseline = session.config.option.llem_baseline
    if baseline and not interrupted and llem.run_dir.read_results():
        llem.comparison = gate_against_baseline(baseline, llem.run_dir, llem.study.gates,
                                                allow_invalid=session.config.option.llem_allow_invalid)
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
        for warning in comparison.loud_warnings:
            terminalreporter.write_line(f"WARNING: {warning}", yellow=True)
        for line in gated_summary(comparison):
            terminalreporter.write_line(line)
        for failure in comparison.failures:
            terminalreporter.write_line(failure, red=True)
        terminalreporter.write_line(f"{comparison.gate_line} -- {llem.run_dir.path / 'comparison.md'}",
                                    red=comparison.failed, green=not comparison.failed)
