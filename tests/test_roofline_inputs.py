"""Roofline inputs (audit 6.2): weight bytes from the stored dtypes and vLLM's quantization, the KV
cache's own element size, GPU names without an energy meter. Pure functions, no GPU."""

from types import SimpleNamespace

import pytest
import torch

from llem_bench.backends.pytorch import weight_bytes as stored_weight_bytes
from llem_bench.backends.vllm import _parameter_counts, kv_element_bytes, weight_bytes
from llem_bench.harness.roofline import decode_roofline

# Llama-3.2-1B's config
LLAMA_1B = SimpleNamespace(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, vocab_size=128256,
                           num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)
SHAPE = {"layers": 16, "kv_heads": 8, "head_dim": 64}


def test_roofline_vllm_parameter_count_of_llama_1b_splits_linear_weights_from_the_rest():
    linear, other = _parameter_counts(LLAMA_1B)
    assert linear + other == 1_235_814_400  # the published count
    assert other == 128256 * 2048 + 16 * 2 * 2048 + 2048  # tied embedding, norms


def test_roofline_vllm_fp8_weights_are_one_byte_and_embeddings_stay_in_dtype():
    linear, other = _parameter_counts(LLAMA_1B)
    bf16 = weight_bytes(linear, other, 2, None)
    fp8 = weight_bytes(linear, other, 2, "fp8")
    assert bf16["weight_bytes"] == (linear + other) * 2
    assert fp8["weight_bytes"] == linear + other * 2 and "fp8" in fp8["weight_basis"]
    # A GPTQ checkpoint's own bits win over the table's 4.
    assert weight_bytes(linear, other, 2, "gptq", {"bits": 8})["weight_bytes"] == linear + other * 2
    assert weight_bytes(linear, other, 2, "bitsandbytes", {"load_in_8bit": True})["weight_bytes"] == linear + other * 2
    assert weight_bytes(linear, other, 2, "awq")["weight_bytes"] == linear / 2 + other * 2


def test_roofline_unknown_vllm_quantization_gives_a_reason_not_a_wrong_bound():
    unknown = weight_bytes(10, 10, 2, "some_new_method")
    assert unknown["weight_bytes"] is None and "QUANT_WEIGHT_BITS" in unknown["reason"]
    r = decode_roofline({**SHAPE, **unknown, "kv_bytes_per_element": 2}, ["NVIDIA H100 80GB HBM3"], 1, 10, 100)
    assert r["fraction"] is None and "some_new_method" in r["reason"]


def test_roofline_vllm_fp8_kv_cache_is_one_byte():
    assert kv_element_bytes("auto", 2) == 2 and kv_element_bytes("fp8", 2) == 1
    assert kv_element_bytes("fp8_e5m2", 2) == 1 and kv_element_bytes("bfloat16", 4) == 2


def test_roofline_kv_bytes_use_the_kv_dtype_not_the_weight_dtype():
    base = {**SHAPE, "weight_bytes": 1e9}
    bf16 = decode_roofline({**base, "kv_bytes_per_element": 2}, ["NVIDIA H100 80GB HBM3"], 8, 1000, 100)
    fp8 = decode_roofline({**base, "kv_bytes_per_element": 1}, ["NVIDIA H100 80GB HBM3"], 8, 1000, 100)
    assert fp8["kv_bytes_per_step"] == pytest.approx(bf16["kv_bytes_per_step"] / 2)
    assert fp8["weight_bytes"] == bf16["weight_bytes"] == 1e9


def test_roofline_pytorch_weight_bytes_sum_every_parameter_at_its_stored_size():
    model = torch.nn.Sequential(torch.nn.Embedding(100, 8, dtype=torch.bfloat16),  # first parameter: 2 bytes
                                torch.nn.Linear(8, 8, bias=False))
    # int8 storage, as a quantized layer keeps it (bnb's Int8Params, quanto's weights)
    model[1].weight = torch.nn.Parameter(torch.zeros(8, 8, dtype=torch.int8), requires_grad=False)
    assert stored_weight_bytes(model) == 100 * 8 * 2 + 64 * 1


class _ShapeBackend:
    name = "fake"

    def __init__(self, ordinals):
        self.ordinals = ordinals

    def cuda_ordinals(self):
        return self.ordinals

    def model_shape(self):
        return {**SHAPE, "weight_bytes": 2e9, "kv_bytes_per_element": 2}

    def decode_batch(self, workload):
        return 1


def test_roofline_with_energy_none_on_a_gpu_reads_the_gpu_names_from_nvml(monkeypatch):
    """measurement.energy: none gives an UnavailableMeter without GPUs: the reason must not be 'no GPU'."""
    from llem_bench.energy import gpus
    from llem_bench.energy.meter import UnavailableMeter
    from llem_bench.harness.runner import _roofline
    from llem_bench.workload.prompts import Workload

    monkeypatch.setattr(gpus, "nvml_handles_for", lambda ordinals: {f"GPU-{i}": i for i in ordinals})
    monkeypatch.setattr(gpus, "gpu_facts", lambda handle: {"name": "NVIDIA GH200 480GB"})
    meter = UnavailableMeter("energy measurement disabled (measurement.energy: none)")
    phases = {"decode": {"tokens_per_s": 50.0}}
    workload = Workload([[1] * 10], output_tokens=4, source="test")
    on_gpu = _roofline(_ShapeBackend([0]), workload, meter, phases)
    assert on_gpu["gpus"] == ["NVIDIA GH200 480GB"] and on_gpu["bandwidth_gbs"] == 4000 and on_gpu["fraction"]
    assert _roofline(_ShapeBackend([]), workload, meter, phases)["reason"].startswith("no GPU")


def test_roofline_without_decode_names_the_phase_reason_not_phases_off(monkeypatch):
    from llem_bench.energy import gpus
    from llem_bench.energy.meter import UnavailableMeter
    from llem_bench.harness.runner import _roofline
    from llem_bench.workload.prompts import Workload

    monkeypatch.setattr(gpus, "nvml_handles_for", lambda ordinals: {"GPU-0": 0})
    monkeypatch.setattr(gpus, "gpu_facts", lambda handle: {"name": "NVIDIA H200"})
    phases = {"decode": {"tokens_per_s": None, "reason": "no decode: every request generated a single token"}}
    r = _roofline(_ShapeBackend([0]), Workload([[1] * 10], 1, "test"), UnavailableMeter("off"), phases)
    assert r["fraction"] is None and r["reason"] == ("decode throughput not measured: no decode: every request "
                                                     "generated a single token")


def _tiny_llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, vocab_size=100,
                                        tie_word_embeddings=tied))


def test_roofline_pytorch_untied_input_embedding_is_not_read_whole_each_step():
    """A decode step reads the LM head whole and one input-embedding row per sequence: tied or untied,
    the bytes per step are the same, though the untied model stores one more vocab x hidden matrix."""
    tied, untied = _tiny_llama(True), _tiny_llama(False)
    stored = lambda m: sum(p.numel() * p.element_size() for p in m.parameters())  # noqa: E731
    assert stored(untied) == stored(tied) + 100 * 16 * 4
    assert stored_weight_bytes(untied) == stored_weight_bytes(tied) == stored(tied)


def test_roofline_vllm_counts_untied_models_like_tied_ones_and_gives_moe_a_reason():
    from llem_bench.backends.vllm import step_weight_bytes
    from llem_bench.harness.roofline import moe_experts

    untied = SimpleNamespace(**{**vars(LLAMA_1B), "tie_word_embeddings": False})
    assert step_weight_bytes(untied, 2, None) == step_weight_bytes(LLAMA_1B, 2, None)
    assert step_weight_bytes(LLAMA_1B, 2, None)["weight_bytes"] == 1_235_814_400 * 2
    moe = step_weight_bytes(SimpleNamespace(**{**vars(LLAMA_1B), "num_local_experts": 8}), 2, None)
    assert moe["weight_bytes"] is None and "mixture of experts (8 per layer)" in moe["reason"]
    assert moe_experts(SimpleNamespace(n_routed_experts=64)) == 64 and moe_experts(LLAMA_1B) is None
    assert moe_experts(SimpleNamespace(num_experts=1)) is None
