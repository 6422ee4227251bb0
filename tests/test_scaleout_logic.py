"""Scale-out logic that needs no GPU and no scheduler: GPU blocks per xdist worker, the shard split,
merge refusals, and the sbatch script (the real runs: tests/test_scaleout.py and .ci/slurm.sh)."""

import json
import random

import pytest

from llem_bench.cli import main
from llem_bench.config.errors import ConfigError
from llem_bench.config.study import ClusterSpec, load_study, parse_study
from llem_bench.harness.runner import failed_result
from llem_bench.results.store import RunDir, write_json_atomic
from llem_bench.scaleout.gpus import check_experiments_fit, node_gpus, plan_workers, worker_environment
from llem_bench.scaleout.merge import merge_runs
from llem_bench.scaleout.shard import load_groups, parse_shard, shard_test_ids
from llem_bench.scaleout.slurm import SubmitPlan, sbatch_script

UUIDS = [f"GPU-{i}aaa-uuid" for i in range(4)]

SWEEP = {"study": "s", "model": "synthetic:tiny",
         "sweep": {"dtype": ["float32", "bfloat16", "float16"], "pytorch.batch_size": [1, 2, 4]}}


def test_each_worker_gets_its_own_block_of_gpus_and_too_many_is_an_error():
    assert plan_workers(4, 2, 2) == [[0, 1], [2, 3]]
    assert plan_workers(8, 3, 2) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match=r"-n 3 workers x --llem-gpus-per-worker 2 = 6 GPUs, but 4 are visible; use -n 2"):
        plan_workers(4, 3, 2)


def test_node_gpus_come_from_cuda_visible_devices_or_nvml_and_none_without_nvml():
    assert node_gpus({}, UUIDS).tokens == UUIDS  # by UUID: CUDA's and NVML's orderings cannot disagree
    by_uuid = node_gpus({"CUDA_VISIBLE_DEVICES": "GPU-2aaa,GPU-0aaa"}, UUIDS)
    assert by_uuid.tokens == ["GPU-2aaa", "GPU-0aaa"] and by_uuid.uuids == [UUIDS[2], UUIDS[0]]
    indices = node_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}, UUIDS)  # e.g. from Slurm
    assert indices.tokens == ["1", "3"] and indices.uuids == [None, None] and "PCI_BUS_ID" in indices.notes[0]
    pci = node_gpus({"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, UUIDS)
    assert pci.uuids == [UUIDS[1], UUIDS[3]]
    assert node_gpus({"CUDA_VISIBLE_DEVICES": ""}, UUIDS).tokens == []
    assert node_gpus({"CUDA_VISIBLE_DEVICES": "0,1"}, []).tokens == []  # names nothing on a CPU host


def test_worker_environment_pins_the_slot_and_says_which_other_gpus_were_busy():
    env = worker_environment(1, 2, 2, node_gpus({}, UUIDS))
    assert env["CUDA_VISIBLE_DEVICES"] == f"{UUIDS[2]},{UUIDS[3]}"
    placement = json.loads(env["LLEM_PLACEMENT"])
    assert placement["pinned"] and placement["worker_slot"] == "gw1" and placement["gpu_uuids"] == UUIDS[2:]
    assert placement["other_gpus_busy"] == UUIDS[:2] and "metered only its own GPUs" in placement["note"]
    # one worker of one GPU on a 4-GPU node: the idle GPUs are not "busy"
    assert json.loads(worker_environment(0, 1, 1, node_gpus({}, UUIDS))["LLEM_PLACEMENT"])["other_gpus_busy"] == []
    cpu = worker_environment(0, 2, 1, node_gpus({}, []))
    assert "CUDA_VISIBLE_DEVICES" not in cpu
    placement = json.loads(cpu["LLEM_PLACEMENT"])
    assert placement["pinned"] is False and "same CPUs" in placement["note"]


def test_an_experiment_needing_more_gpus_than_a_worker_has_is_refused():
    _, experiments = parse_study({"study": "tp", "model": "synthetic:tiny", "backend": "vllm",
                                  "sweep": {"vllm.tensor_parallel_size": [1, 2]}, "backends": {"vllm": {}}})
    check_experiments_fit(experiments, 2)
    with pytest.raises(ValueError, match=r"experiment vllm-tiny-.*tensor_parallel_size_2.* needs 2 GPUs .* "
                                         r"--llem-gpus-per-worker 2"):
        check_experiments_fit(experiments, 1)


def test_shard_split_keeps_load_groups_whole_is_balanced_and_ignores_order():
    _, experiments = parse_study(SWEEP)
    groups = load_groups(experiments)
    assert len(groups) == 3 and all(len(ids) == 3 for ids in groups.values())  # batch_size is not a load field
    shards = [shard_test_ids(experiments, i, 3) for i in (1, 2, 3)]
    assert sorted(len(s) for s in shards) == [3, 3, 3] and set().union(*shards) == {e.test_id for e in experiments}
    assert all(set(ids) in shards for ids in groups.values())
    shuffled = experiments[:]
    random.Random(1).shuffle(shuffled)
    assert [shard_test_ids(shuffled, i, 3) for i in (1, 2, 3)] == shards
    two = [shard_test_ids(experiments, i, 2) for i in (1, 2)]
    assert sorted(len(s) for s in two) == [3, 6] and not two[0] & two[1]
    with pytest.raises(ValueError, match="the study has 3 load group"):
        shard_test_ids(experiments, 1, 4)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shard_is_refused(text):
    with pytest.raises(ValueError, match="--llem-shard"):
        parse_shard(text)


def _run(tmp_path, name, study="s", commit="a" * 40, shard=None, ids=None, error="boom"):
    """A run folder with failed results (real ExperimentResults, written as the harness writes them)."""
    _, experiments = parse_study(dict(SWEEP, study=study))
    run = RunDir(tmp_path / name)
    for exp in experiments:
        if ids is None or exp.test_id in ids:
            result = failed_result(exp, name, "2026-01-01T00:00:00+00:00", error)
            result.environment["git_commit"] = commit
            run.write_result(result)
    manifest = {"study": study, "run_id": name, "state": "complete", "experiments": {}}
    if shard:
        manifest["shard"] = {"index": shard[0], "count": shard[1]}
    write_json_atomic(run.path / "manifest.json", manifest)
    return run.path, [e.test_id for e in experiments]


def test_merge_joins_shards_into_one_run_with_one_manifest_and_report(tmp_path):
    _, experiments = parse_study(SWEEP)
    one, two = (shard_test_ids(experiments, i, 2) for i in (1, 2))
    a, all_ids = _run(tmp_path, "a", shard=(1, 2), ids=one)
    b, _ = _run(tmp_path, "b", shard=(2, 2), ids=two)
    out = tmp_path / "merged"
    assert main(["merge", str(a), str(b), "--out", str(out)]) == 1  # merged fine; exit 1: the results are failures
    assert sorted(p.stem for p in (out / "results").glob("*.json")) == sorted(all_ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "complete" and [m["shard"] for m in manifest["merged_from"]] == ["1/2", "2/2"]
    assert len(json.loads((out / "study.json").read_text())["experiments"]) == len(all_ids)
    assert (out / "report.md").is_file()


def test_merge_refuses_mixed_studies_conflicting_duplicates_other_commits_and_missing_shards(tmp_path):
    a, _ = _run(tmp_path, "a")
    other, _ = _run(tmp_path, "other", study="t")
    with pytest.raises(ConfigError, match="must be of one study"):
        merge_runs([a, other], tmp_path / "o1")
    differs, _ = _run(tmp_path, "differs", error="another error")
    with pytest.raises(ConfigError, match="is in .* and .* with different contents"):
        merge_runs([a, differs], tmp_path / "o2")
    newer, _ = _run(tmp_path, "newer", commit="b" * 40)
    with pytest.raises(ConfigError, match="different git commits .*--allow-mixed-commits"):
        merge_runs([a, newer], tmp_path / "o3")
    assert main(["merge", str(a), str(newer), "--out", str(tmp_path / "o3")]) == 2
    with pytest.raises(ConfigError, match="with different contents"):  # allowed commits, still conflicting results
        merge_runs([a, newer], tmp_path / "o4", allow_mixed_commits=True)
    half, _ = _run(tmp_path, "half", shard=(1, 2))
    with pytest.raises(ConfigError, match=r"shard\(s\) 2/2 missing"):
        merge_runs([half], tmp_path / "o5")
    assert merge_runs([half], tmp_path / "o5", allow_partial=True)["state"] == "incomplete"
    with pytest.raises(ConfigError, match="exists and is not empty"):
        merge_runs([half], tmp_path / "o5", allow_partial=True)


def test_merge_keys_on_the_result_file_so_repeats_of_one_experiment_all_survive(tmp_path):
    """Run-level repeats write <test_id>-r<k>.json: the same test id in two files is not a duplicate."""
    a, ids = _run(tmp_path, "a", ids=set())
    b, _ = _run(tmp_path, "b", ids=set())
    _, experiments = parse_study(SWEEP)
    for k, run in ((1, a), (2, b)):
        result = failed_result(experiments[0], run.name, "2026-01-01T00:00:00+00:00", f"repeat {k}")
        result.environment["git_commit"] = "a" * 40
        write_json_atomic(run / "results" / f"{experiments[0].test_id}-r{k}.json", result.model_dump(mode="json"))
    merge_runs([a, b], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "results").iterdir()) == \
        [f"{experiments[0].test_id}-r1.json", f"{experiments[0].test_id}-r2.json"]


def _plan(tmp_path, **cluster):
    return SubmitPlan(tmp_path / "study.yaml", "s", "r1", tmp_path / "reports", 3, ClusterSpec(**cluster), tmp_path)


def test_sbatch_script_is_one_array_task_per_shard_with_its_gpus_and_the_given_flags(tmp_path):
    script = sbatch_script(_plan(tmp_path, partition="gpu", time="2:00:00", gpus_per_task=4, gpus_per_worker=2,
                                 mem="64G", sbatch_args=["--account=proj"], python="/venv/bin/python",
                                 launcher="apptainer exec --nv llem.sif", pytest_args=["-k", "bf16 or fp16"]))
    for line in ("#SBATCH --array=1-3", "#SBATCH --partition=gpu", "#SBATCH --time=2:00:00",
                 "#SBATCH --gpus-per-task=4", "#SBATCH --mem=64G", "#SBATCH --account=proj",
                 f"#SBATCH --output={tmp_path}/reports/s/r1-slurm/shard-%a.out"):
        assert line in script.splitlines()
    command = script.splitlines()[-1]
    assert command.startswith("apptainer exec --nv llem.sif /venv/bin/python -m pytest benchmarks --study ")
    assert "-n 2 --llem-gpus-per-worker 2" in command and "-k 'bf16 or fp16'" in command
    assert '--llem-shard "${SLURM_ARRAY_TASK_ID}/3" --llem-run-id "r1-shard${SLURM_ARRAY_TASK_ID}of3"' in command
    plain = sbatch_script(_plan(tmp_path))
    assert "--gpus-per-task" not in plain and "--partition" not in plain and " -n " not in plain


def test_cluster_section_is_validated_strictly(write_study):
    for text, message in [("cluster: {partiton: gpu}", "cluster.partiton: unknown key 'partiton'. Did you mean 'partition'"),
                          ("cluster: {time: soon}", "cluster.time: String should match pattern"),
                          ("cluster: {gpus_per_task: 2, gpus_per_worker: 3}", "must divide gpus_per_task")]:
        assert main(["validate", str(write_study(f"study: s\nmodel: synthetic:tiny\n{text}\n"))]) == 2, text
        with pytest.raises(ConfigError, match=message):
            load_study(write_study(f"study: s\nmodel: synthetic:tiny\n{text}\n"))


def test_submit_refuses_bad_input_before_anything_is_submitted(write_study, capsys):
    path = str(write_study("study: s\nmodel: synthetic:tiny\ncluster: {partition: gpu, time: '1:00:00'}\n"))
    assert main(["submit", path]) == 2 and "--slurm" in capsys.readouterr().err
    assert main(["submit", path, "--slurm", "--shards", "2"]) == 2
    assert "2 shards but the study has 1 load group(s)" in capsys.readouterr().err
    assert main(["submit", path, "--slurm", "--time", "later"]) == 2
    assert "cluster.time" in capsys.readouterr().err
    assert main(["submit", path, "--slurm", "--dry-run", "--run-id", "x", "--partition", "debug"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --partition=debug" in script and "#SBATCH --time=1:00:00" in script  # CLI over study
