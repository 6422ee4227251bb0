"""Inference backends behind one small protocol. Backends know nothing of pytest."""

from __future__ import annotations

from llem_bench.backends.base import Backend, PassOutput, load_key


def create_backend(name: str) -> Backend:
    if name == "pytorch":
        from llem_bench.backends.pytorch import PyTorchBackend

        return PyTorchBackend()
    if name == "vllm":
        from llem_bench.backends.vllm import VLLMBackend

        return VLLMBackend()
    if name == "tensorrt":
        from llem_bench.backends.tensorrt import TensorRTBackend

        return TensorRTBackend()
    raise NotImplementedError(f"unknown backend '{name}' (available: pytorch, vllm, tensorrt)")


__all__ = ["Backend", "PassOutput", "create_backend", "load_key"]
