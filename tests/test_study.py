import re

import pytest

from llem_bench.config import ConfigError
from llem_bench.config.study import load_study, parse_study

S = {"study": "s", "model": "synthetic:tiny"}  # the least a study needs

DESIGN_EXAMPLE = {
    "study": "llama1b-h100",
    "model": "synthetic:llama-1b",
    "workload": {"num_prompts": 64, "max_input_tokens": 256, "output_tokens": 128},
    "decoding": {"preset": "deterministic"},
    "measurement": {"cycles": 3, "warmup": {"cv_target": 0.05, "max_runs": 5}, "min_window_s": 5},
    "backends": {"pytorch": {"batch_size": 8}, "vllm": {"gpu_memory_utilization": 0.6}},
    "sweep": {
        "backend": ["pytorch", "vllm"],
        "dtype": ["bfloat16", "float16"],
        "pytorch.batch_size": [1, 8, 64],
        "vllm.max_num_seqs": [1, 8, 64],
    },
    "gates": {"energy_per_output_token_j": {"max_increase": "5%"}},
}


def ids(raw):
    return [e.test_id for e in parse_study(raw)[1]]


def error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_study(raw)
    return str(info.value)


def test_design_example_expands_to_six_experiments_per_backend():
    _, experiments = parse_study(DESIGN_EXAMPLE)
    assert len(experiments) == 12
    by_backend = {b: [e for e in experiments if e.backend == b] for b in ("pytorch", "vllm")}
    assert sorted(e.config.pytorch.batch_size for e in by_backend["pytorch"]) == [1, 1, 8, 8, 64, 64]
    assert sorted(e.config.vllm.max_num_seqs for e in by_backend["vllm"]) == [1, 1, 8, 8, 64, 64]
    # per-backend defaults reach their own backend only
    assert all(e.config.vllm.gpu_memory_utilization == 0.6 for e in by_backend["vllm"])
    assert all(e.config.workload.output_tokens == 128 for e in experiments)


def test_ids_are_k_friendly_unique_and_end_with_a_hash():
    experiment_ids = ids(DESIGN_EXAMPLE)
    assert len(set(experiment_ids)) == len(experiment_ids)
    for test_id in experiment_ids:
        assert re.fullmatch(r"[A-Za-z0-9_.-]+-[0-9a-f]{6}", test_id), test_id
    assert "vllm-llama-1b-bf16-max_num_seqs_8-" in " ".join(experiment_ids)


def test_ids_are_stable_across_runs_and_independent_of_the_study_name():
    renamed = dict(DESIGN_EXAMPLE, study="renamed")
    assert ids(DESIGN_EXAMPLE) == ids(renamed)
    # Pinned: an id change silently breaks every saved baseline, so it must be deliberate.
    assert ids({**S, "sweep": {"pytorch.batch_size": [4]}}) == [
        "pytorch-tiny-auto-batch_size_4-319c8c"]


def test_id_hash_changes_with_any_setting():
    a = ids({**S, "workload": {"output_tokens": 8}})
    b = ids({**S, "workload": {"output_tokens": 9}})
    assert a != b


def test_explicit_experiments_are_added_after_the_grid():
    raw = {**S, "sweep": {"pytorch.batch_size": [1, 2]},
           "experiments": [{"pytorch": {"batch_size": 16}, "dtype": "bfloat16"}]}
    _, experiments = parse_study(raw)
    assert [e.config.pytorch.batch_size for e in experiments] == [1, 2, 16]
    assert experiments[-1].config.dtype == "bfloat16"


def test_without_a_sweep_only_the_explicit_experiments_run():
    raw = {**S, "experiments": [{"pytorch": {"batch_size": 1}}, {"pytorch": {"batch_size": 8}}]}
    assert [e.config.pytorch.batch_size for e in parse_study(raw)[1]] == [1, 8]
    assert len(parse_study(S)[1]) == 1  # no sweep, no experiments: the defaults, once


def test_dtype_short_names_are_accepted():
    _, [experiment] = parse_study({**S, "dtype": "bf16"})
    assert experiment.config.dtype == "bfloat16"


@pytest.mark.parametrize("raw, expected", [
    ({**S, "workload": {"num_promts": 3}},
     "workload.num_promts: unknown key 'num_promts'. Did you mean 'num_prompts'?"),
    ({**S, "backends": {"pytorch": {"batch_sze": 3}}},
     "backends.pytorch.batch_sze: unknown key 'batch_sze'. Did you mean 'batch_size'?"),
    ({**S, "sweep": {"pytorch.batch_size": [1, 0]}},
     "sweep['pytorch.batch_size'][1]: Input should be greater than or equal to 1 (got 0)"),
    ({**S, "sweep": {"pytorch.batchsize": [1]}}, "Did you mean 'batch_size'?"),
    ({**S, "sweep": {"dtyp": ["float16"]}}, "sweep.dtyp: unknown axis. Did you mean 'dtype'?"),
    ({**S, "sweep": {"backend": ["pytorh"]}}, "unknown backend 'pytorh'. Did you mean 'pytorch'?"),
    ({**S, "sweep": {"vllm.max_num_seqs": [8]}}, "applies to backend 'vllm', which this study does not run"),
    ({**S, "dtype": "float8"}, "dtype: Input should be 'auto', 'float32', 'float16' or 'bfloat16'"),
    ({**S, "experiments": [{"pytorch": {"batch_size": -1}}]}, "experiments[0].pytorch.batch_size"),
    ({**S, "decoding": {"temperature": 0.7}}, "only apply to preset: sampling"),
    ({**S, "sweep": {"dtype": []}}, "sweep.dtype: empty list"),
    ({**S, "sweep": {"dtype": ["float16", "float16"]}}, "are identical"),
    ({**S, "gates": {"avg_power_w": {"max_increase": "five"}}}, "expected a percentage such as 5%"),
    ({"study": "bad name"}, "study: String should match pattern"),
    ({"model": "x"}, "study: Field required"),
    ({**S, "colour": "red"}, "unknown key 'colour'"),
])
def test_config_errors_name_the_yaml_path_and_the_fix(raw, expected):
    assert expected in error(raw)


def test_yaml_errors_and_missing_files_are_config_errors(write_study, tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_study(write_study("study: [unclosed"))
    with pytest.raises(ConfigError, match="study file not found"):
        load_study(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="a study is a YAML mapping"):
        load_study(write_study("- just\n- a list\n"))


def test_max_memory_takes_gpu_indices_as_yaml_writes_them():
    # YAML reads `0:` as an int and `cpu:` as a string; accelerate wants GPU indices as ints
    raw = {"study": "s", "model": "synthetic:tiny",
           "backends": {"pytorch": {"device_map": "auto", "max_memory": {0: "20GiB", "1": "10GiB", "cpu": "64GiB"}}}}
    [experiment] = parse_study(raw)[1]
    assert experiment.config.pytorch.max_memory == {0: "20GiB", 1: "10GiB", "cpu": "64GiB"}
    assert re.fullmatch(r"pytorch-tiny-auto-[0-9a-f]{6}", experiment.test_id)
    raw["backends"]["pytorch"]["max_memory"] = {"gpu0": "20GiB"}
    assert "max_memory: unknown device 'gpu0'; use a GPU index (0, 1, ...), cpu or disk" in error(raw)
