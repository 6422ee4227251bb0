"""Decode memory-bandwidth roofline: every decode step reads all weights plus the KV cache, so
tokens/s cannot exceed batch x bandwidth / bytes-per-step. The fraction reached says how much
headroom a kernel or batching change could still buy."""

from __future__ import annotations

from typing import Any, Optional

# Peak HBM/GDDR bandwidth in GB/s from the vendors' data sheets, matched on the NVML name.
BANDWIDTH_GBS = [
    ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350), ("H200", 4800), ("GH200", 4000),
    ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935), ("A100-PCIE-40GB", 1555), ("A100-SXM4-40GB", 1555),
    ("L40S", 864), ("L40", 864), ("L4", 300), ("A10G", 600), ("A10", 600), ("RTX 4090", 1008),
    ("RTX 3090", 936), ("V100", 900), ("T4", 320), ("B200", 8000),
]


def moe_experts(hf_config: Any) -> Optional[int]:
    """Experts per layer of a mixture-of-experts config (the names Mixtral, Qwen-MoE and DeepSeek use), else None."""
    for name in ("num_local_experts", "num_experts", "n_routed_experts"):
        value = getattr(hf_config, name, None)
        if isinstance(value, int) and value > 1:
            return value
    return None


def moe_reason(experts: int) -> str:
    return (f"mixture of experts ({experts} per layer): the expert weights a decode step reads depend on routing "
            "and batch, so no bytes-per-step bound is given")


def bandwidth_gbs(gpu_name: Optional[str]) -> Optional[float]:
    """The longest matching key wins, so "GH200" is not read as "H200" nor "H100 NVL" as "H100"."""
    matches = [(len(key), gbs) for key, gbs in BANDWIDTH_GBS if gpu_name and key.lower() in gpu_name.lower()]
    return float(max(matches)[1]) if matches else None


def decode_roofline(shape: dict[str, Any], gpu_names: list[str], batch: int, avg_context: float,
                    measured_decode_tokens_per_s: Optional[float], layer_sequential: bool = False,
                    no_measurement_reason: str = "decode throughput not measured (phases off?)") -> dict[str, Any]:
    """`shape`: weight_bytes (as stored: quantized weights count at their own size), kv_bytes_per_element
    (the KV cache dtype's), layers, kv_heads, head_dim; or a `reason` when the weight bytes are unknown.
    `layer_sequential`: the GPUs hold consecutive layers and run one at a time (PyTorch device_map),
    so only one GPU's bandwidth counts; otherwise (tensor parallel) the bandwidths add up."""
    if not gpu_names:
        return {"fraction": None, "reason": "no GPU: the roofline is a GPU memory-bandwidth bound"}
    if shape.get("weight_bytes") is None:
        return {"fraction": None, "reason": shape.get("reason") or "weight bytes unknown"}
    per_gpu = [bandwidth_gbs(n) for n in gpu_names]
    if None in per_gpu:
        return {"fraction": None, "reason": f"bandwidth of {gpu_names} not in the table (llem_bench/harness/roofline.py)"}
    bandwidth = (max(per_gpu) if layer_sequential else sum(per_gpu)) * 1e9
    weight_bytes = shape["weight_bytes"]
    kv_bytes = (2 * shape["layers"] * shape["kv_heads"] * shape["head_dim"] * shape["kv_bytes_per_element"]
                * batch * avg_context)
    bytes_per_step = weight_bytes + kv_bytes
    bound = batch * bandwidth / bytes_per_step
    return {
        "bandwidth_gbs": bandwidth / 1e9, "gpus": gpu_names,
        "bandwidth_basis": "one GPU at a time (layers split across GPUs)" if layer_sequential and len(gpu_names) > 1
        else "sum over the GPUs", "batch": batch, "avg_context_tokens": avg_context,
        "weight_bytes": weight_bytes, "weight_basis": shape.get("weight_basis"), "kv_bytes_per_step": kv_bytes,
        "kv_bytes_per_element": shape["kv_bytes_per_element"], "bytes_per_step": bytes_per_step,
        "bound_tokens_per_s": bound, "measured_decode_tokens_per_s": measured_decode_tokens_per_s,
        "fraction": measured_decode_tokens_per_s / bound if measured_decode_tokens_per_s else None,
        "reason": None if measured_decode_tokens_per_s else no_measurement_reason,
    }
