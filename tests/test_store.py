import json

from llem_bench.results.schema import ExperimentResult
from llem_bench.results.store import RunDir, write_json_atomic


def minimal_result(test_id="pytorch-tiny-auto-abc123"):
    return ExperimentResult(test_id=test_id, config_hash="abc123", study="s", run_id="r", status="ok",
                            backend="pytorch", model="synthetic:tiny", synthetic=True, config={},
                            started_at="2026-01-01T00:00:00+00:00")


def test_results_round_trip_and_leave_no_temp_files(tmp_path):
    run = RunDir(tmp_path / "s" / "r")
    run.write_result(minimal_result())
    assert [p.name for p in run.results_dir.iterdir()] == ["pytorch-tiny-auto-abc123.json"]
    assert run.read_results()[0].test_id == "pytorch-tiny-auto-abc123"


def test_a_truncated_result_is_reported_not_fatal(tmp_path):
    run = RunDir(tmp_path / "s" / "r")
    run.write_result(minimal_result("a-000000"))
    run.results_dir.joinpath("b-111111.json").write_text('{"test_id": "b-1111')
    results, problems = run.read_results_with_problems()
    assert [r.test_id for r in results] == ["a-000000"]
    assert len(problems) == 1 and "b-111111.json" in problems[0] and "rerun" in problems[0]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert list(tmp_path.iterdir()) == [path]
