"""Run-level repeats: the study setting, the run order, and the noise-floor aggregation (pure logic)."""

import pytest

from llem_bench.backends import load_key
from llem_bench.config.errors import ConfigError
from llem_bench.config.study import parse_study
from llem_bench.harness.order import describe_plan, plan_runs
from llem_bench.results.repeats import noise_floor
from test_compare import make_result

SWEEP = {"study": "s", "model": "synthetic:tiny",
         "sweep": {"dtype": ["float32", "bfloat16"], "pytorch.batch_size": [1, 2, 4]}}


def study(**measurement):
    return parse_study({**SWEEP, "measurement": measurement})


def test_repeats_do_not_change_test_ids_or_hashes():
    _, plain = study()
    s, repeated = study(repeats=3, repeat_seed=9)
    assert [e.test_id for e in repeated] == [e.test_id for e in plain]
    assert s.repeats == 3 and s.repeat_seed == 9
    assert all(e.config.measurement.repeats == 3 for e in repeated)   # recorded in the resolved config


@pytest.mark.parametrize("raw, field", [
    ({**SWEEP, "sweep": {**SWEEP["sweep"], "measurement.repeats": [1, 3]}}, "sweep.measurement.repeats"),
    ({**SWEEP, "experiments": [{"measurement": {"repeats": 2}}]}, "experiments[0].measurement.repeats"),
    ({**SWEEP, "experiments": [{"measurement": {"repeat_seed": 2}}]}, "experiments[0].measurement.repeat_seed"),
])
def test_repeats_per_experiment_are_refused_naming_the_field(raw, field):
    with pytest.raises(ConfigError, match=f"{field.replace('[', '.').replace(']', '.')}.*run-level setting"):
        parse_study(raw)


def test_one_repeat_keeps_the_grouped_order_and_plain_keys():
    _, experiments = study()
    plan = plan_runs(experiments)
    assert [e.key for e in plan] == [e.test_id for e in sorted(experiments, key=lambda e: load_key(e.config))]
    assert all(e.repeat is None and e.repeats == 1 for e in plan)


def test_repeats_shuffle_per_repeat_keep_groups_together_and_are_seeded():
    _, experiments = study()
    plan = plan_runs(experiments, repeats=4, seed=1)
    assert len(plan) == 4 * len(experiments)
    assert [e.repeat for e in plan] == [k for k in (1, 2, 3, 4) for _ in experiments]
    for k in (1, 2, 3, 4):
        runs = [e for e in plan if e.repeat == k]
        assert sorted(e.test_id for e in runs) == sorted(e.test_id for e in experiments)
        keys = [load_key(e.config) for e in runs]
        assert keys == sorted(keys, key=keys.index)      # each load group contiguous: one load per group
        assert all(e.key == f"{e.test_id}-r{k}" for e in runs)
    orders = {tuple(e.test_id for e in plan if e.repeat == k) for k in (1, 2, 3, 4)}
    assert len(orders) > 1                                # the order changes between repeats
    assert [e.key for e in plan_runs(experiments, 4, 1)] == [e.key for e in plan]   # same seed, same plan
    assert [e.key for e in plan_runs(experiments, 4, 2)] != [e.key for e in plan]


def test_plan_record_names_the_loads():
    _, experiments = study()
    plan = plan_runs(experiments, repeats=3, seed=4)
    record = describe_plan(plan, 4)
    assert record["repeats"] == 3 and record["repeat_seed"] == 4
    assert [len(v) for v in record["order"].values()] == [6, 6, 6]
    switches = sum(1 for a, b in zip(plan, plan[1:]) if load_key(a.config) != load_key(b.config))
    assert len(record["planned_loads"]) == switches + 1 <= 2 * 3   # at most once per group per repeat


def test_offline_in_process_and_server_experiments_are_three_loads_even_with_equal_engine_arguments():
    # The serving consistency study's shape, interleaved: the plan must group by engine instance and
    # say that three engines load (the LLM, AsyncLLM and the server), not one.
    _, experiments = parse_study({
        "study": "s", "model": "synthetic:tiny", "backend": "vllm",
        "experiments": [{"scenario": "serving", "serving": {"rate": 8, "engine": "server"}},
                        {"scenario": "offline"},
                        {"scenario": "serving", "serving": {"rate": 8, "engine": "inprocess"}},
                        {"scenario": "serving", "serving": {"rate": "inf", "engine": "server"}}]})
    plan = plan_runs(experiments)
    engines = [e.config.serving.engine if e.config.scenario != "offline" else "offline" for e in plan]
    assert engines in (["offline", "inprocess", "server", "server"], ["offline", "server", "server", "inprocess"])
    assert len(describe_plan(plan, 0)["planned_loads"]) == 3
    repeated = plan_runs(experiments, repeats=2, seed=3)
    assert len(describe_plan(repeated, 3)["planned_loads"]) <= 3 * 2


def test_noise_floor_over_repeats_with_cycle_cv_beside_it():
    runs = [make_result(values={"output_tokens_per_s": [v * 0.99, v, v * 1.01]}, repeat=k + 1, repeats=3)
            for k, v in enumerate([100.0, 110.0, 90.0])]
    runs.append(make_result("pytorch-other-abcdef", values={"output_tokens_per_s": [50.0, 51.0]}))
    floor = noise_floor(runs)
    entry = floor["pytorch-tiny-fp32-batch_size_8-abc123"]
    m = entry["metrics"]["output_tokens_per_s"]
    assert entry["repeats"] == 3 and m["n"] == 3 and m["values"] == [100.0, 110.0, 90.0]
    assert m["mean"] == pytest.approx(100.0) and m["sd"] == pytest.approx(10.0) and m["cv"] == pytest.approx(0.1)
    assert m["ci95_high"] - m["mean"] == pytest.approx(4.303 * 10 / 3 ** 0.5, abs=1e-2)
    assert m["cycle_cv"] == pytest.approx(0.01)
    single = floor["pytorch-other-abcdef"]["metrics"]["output_tokens_per_s"]
    assert single["n"] == 1 and single["sd"] is None and single["cv"] is None
