"""llem-bench: energy, throughput and latency of LLM inference, measured as a pytest suite."""

__version__ = "0.1.0"
