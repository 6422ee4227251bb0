"""One pytest session's llem state: the study, where each backend runs, the run folder, its
manifest, GPU hygiene, and running one experiment so that its result is on disk before the
test reports (nothing measured is lost to a later crash or Ctrl-C)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from llem_bench.config.study import Experiment, Study
from llem_bench.energy.meter import make_energy_meter
from llem_bench.harness.order import describe_plan, plan_runs
from llem_bench.harness.pool import BackendPool
from llem_bench.harness.runner import failed_result, log, run_experiment
from llem_bench.hygiene import Hygiene
from llem_bench.progress import status
from llem_bench.isolation.torchrun import check_launches, needs_torchrun
from llem_bench.scaleout.gpus import node_gpus
from llem_bench.isolation.runner import DockerOptions, RunnerSpec, Workers, check_runner, choose_runner, host_has_gpus
from llem_bench.results.environment import git_info
from llem_bench.results.manifest import Manifest
from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir, new_run_id, utc_now


class LlemSession:
    def __init__(self, config: Any, study: Optional[Study], experiments: list[Experiment]):
        self.config = config
        self.option = config.option
        self.study = study
        self.experiments = experiments
        self.test_ids = {e.test_id for e in experiments}
        self.plan = plan_runs(experiments, study.repeats, study.repeat_seed) if study else []
        self.run_keys = {e.key for e in self.plan}  # pytest param ids and result file names
        self.pool = BackendPool()
        self.workers: Optional[Workers] = None  # out-of-process runners, created at first use
        self.run_dir: Optional[RunDir] = None
        self.manifest: Optional[Manifest] = None
        self.runners: dict[str, RunnerSpec] = {}
        self.comparison = None
        self.preflight_notes: list[str] = []  # what the pre-flight checks could not verify here
        self.already_done: dict[str, str] = {}  # resume: run key -> reason it is skipped
        self.resume_problems: list[str] = []
        self.planned = 0  # experiments this session will run (set at collection), for "experiment k/N"
        self.started = 0
        self.current: Optional[str] = None  # "[k/N] <test id>" while an experiment runs
        self.on_idle: Callable[[], None] = lambda: None  # the plugin's countdown of an open window
        self.hygiene = Hygiene(self.option.llem_max_residual_mb, self.option.llem_residual, self.option.llem_settle_s)
        if study is None:
            return
        gpu_host = host_has_gpus()
        for backend in dict.fromkeys(e.backend for e in experiments):
            spec = choose_runner(backend, self.option.llem_runner, study.runners, gpu_host)
            if self.is_controller or spec.kind != "docker":  # xdist workers: the controller checked docker
                check_runner(spec, f"runner for {backend}", need_gpus=gpu_host)
            self.runners[backend] = spec
        if any(needs_torchrun(e.config) for e in experiments):  # tp_plan: fits the GPU set, before any load
            check_launches(experiments, self.runners, node_gpus())
        if self.option.llem_resume:
            self.run_dir = RunDir(Path(self.option.llem_resume))
            self._load_done()
        else:
            workerinput = getattr(config, "workerinput", {})
            run_id = workerinput.get("llem_run_id") or self.option.llem_run_id or \
                new_run_id(git_info(config.rootpath).get("git_commit"))
            self.run_dir = RunDir.create(Path(self.option.llem_out), study.study, run_id)

    @property
    def is_controller(self) -> bool:
        return not hasattr(self.config, "workerinput")

    def _load_done(self) -> None:
        results, problems = self.run_dir.read_results_with_problems()
        self.resume_problems = problems
        for r in results:
            if r.status == "ok":
                self.already_done[r.key] = f"already done in {self.run_dir.path} (--llem-resume)"

    def open_manifest(self, run_keys: list[str]) -> None:
        """Controller only: every selected run pending (or skipped: already done, on resume), and the
        planned order (per repeat) with where a model loads."""
        self.manifest = Manifest.open(self.run_dir.path, self.study.study, self.run_dir.path.name)
        selected = set(run_keys)
        self.manifest.data["plan"] = describe_plan([e for e in self.plan if e.key in selected],
                                                   self.study.repeat_seed)
        self.manifest.register(run_keys, self.already_done)

    def run(self, experiment: Experiment, note: Optional[Callable[..., None]] = None) -> ExperimentResult:
        """Measure `experiment` and write its result; `note(**fields)` receives what the manifest
        records (runner, hygiene, result, reason), also from an xdist worker via the test report."""
        assert self.run_dir is not None
        test_id = experiment.key  # the run: `<test_id>-r<k>` with repeats
        started = utc_now()
        run_id = self.run_dir.path.name
        runner = self.runners[experiment.backend]
        record = self._recorder(test_id, note)
        record(runner=str(runner) + (" via torchrun" if needs_torchrun(experiment.config) else ""))
        self.started += 1
        self.current = f"[{self.started}/{max(self.planned, self.started)}] {test_id}"
        status(f"starting ({runner}" + (", torchrun: one process per tensor parallel rank)"
                                        if needs_torchrun(experiment.config) else ")"))
        try:
            hygiene = self.hygiene.before(test_id)
            record(hygiene=hygiene)
            warning = hygiene["residual_memory"].get("ok") is False
            if warning:
                log(f"{test_id}: warning: GPU memory {hygiene['residual_memory']['outcome']}")
            result = self._measure(experiment, runner, run_id, started)
            result.timings["hygiene"] = hygiene
            if warning:
                result.warnings.append(f"GPU memory {hygiene['residual_memory']['outcome']}")
        except BaseException as exc:
            self.pool.close()  # a failure may leave the backend in a bad state: reload next time
            if isinstance(exc, Exception):  # not Ctrl-C: an interrupted experiment leaves no result
                reason = f"{type(exc).__name__}: {exc}"
                path = self.run_dir.write_result(failed_result(experiment, run_id, started, reason))
                record(result=f"results/{path.name}", reason=reason.splitlines()[0][:500])
            self.current = None
            raise
        status(_outcome(result))
        self.current = None
        path = self.run_dir.write_result(result)
        log(f"{test_id}: result written to {path}")
        record(result=f"results/{path.name}", verdict=result.validity.get("verdict"))
        if result.status != "ok":
            record(reason=(result.error or "").splitlines()[0][:500] if result.error else "failed in its worker")
            raise RuntimeError(f"experiment failed in its worker: {result.error}")
        return result

    def _recorder(self, test_id: str, note: Optional[Callable[..., None]]) -> Callable[..., None]:
        def record(**fields: Any) -> None:
            if note is not None:
                note(**fields)
            if self.manifest is not None:  # not under xdist: show it while it runs
                self.manifest.add(test_id, **fields)
        return record

    def _measure(self, experiment: Experiment, runner: RunnerSpec, run_id: str, started: str) -> ExperimentResult:
        if runner.kind == "inprocess" and not needs_torchrun(experiment.config):  # tp_plan: one process per rank
            backend, reused, load_s = self.pool.acquire(experiment.config)
            return run_experiment(
                experiment, backend,
                lambda ordinals, sampler=None: make_energy_meter(experiment.config.measurement.energy, ordinals, sampler),
                run_id=run_id, started_at=started, model_reused=reused, load_s=load_s,
                idle_before_load=self.pool.idle_before_load, timeseries_dir=self.run_dir.path / "timeseries",
            )
        if self.workers is None:
            self.workers = Workers(self.run_dir.path, self.option.llem_timeout,
                                   DockerOptions(self.option.llem_docker_shm, self.option.llem_docker_ipc_host),
                                   progress=status, idle=lambda: self.on_idle())
        return self.workers.run(runner, experiment, run_id=run_id, started_at=started)

    def close(self, interrupted: bool) -> None:
        self.pool.close()
        if self.workers is not None:
            self.workers.close()
        if self.manifest is not None:
            self.manifest.finish(interrupted)



def _outcome(result: ExperimentResult) -> str:
    if result.status != "ok":
        return "failed"
    tps = result.metrics.get("output_tokens_per_s")
    rate = f", {tps.mean:.1f} out tok/s" if tps is not None else ""
    return f"done: {result.validity.get('verdict', 'no verdict')}{rate}"
