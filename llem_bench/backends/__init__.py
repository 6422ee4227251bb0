"""Inference backends behind one small protocol. Backends know nothing of pytest."""

from __future__ import annotations

from llem_bench.backends.base import Backend, PassOutput, load_key


def create_backend(name: str) -> Backend:
    if name == "pytorch":
        from llem_bench.backends.pytorch import PyTorchBackend

        return PyTorchBackend()
    raise NotImplementedError(
        f"backend '{name}' is not implemented yet in this version of llem-bench (available: pytorch)"
    )


__all__ = ["Backend", "PassOutput", "create_backend", "load_key"]
