"""Tensor parallelism of the PyTorch backend (pytorch.tp_plan) across torchrun ranks.

Rank 0 is the leader: it runs the experiment (measures, writes the result). The other ranks are
followers: they loaded the same shards and must join every generate() call, since each layer
all-reduces across ranks. Before each pass the leader sends the pass (prompts, GenerationConfig,
batch size) to the followers; after it every rank reports (tokens generated, a checksum of them,
its peak memory). The messages go over a gloo group: a follower waits on a socket, not in an
NCCL kernel that would spin its GPU (and its power) while the leader measures idle power. The
report after a pass is also the pass's barrier: the leader's window cannot end before every
rank finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

STOP = None  # the leader's last message: the followers return


def launched() -> bool:
    """Whether this process is one rank of a torchrun launch (torchrun sets these)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def distributed_config(section: Any) -> Any:
    """transformers' DistributedConfig for pytorch.tp_plan / tp_size (passing tp_plan to from_pretrained
    directly is deprecated in transformers 5). tp_size defaults to the launch's world size."""
    from transformers.distributed import DistributedConfig

    return DistributedConfig(tp_plan=section.tp_plan, tp_size=section.tp_size or int(os.environ["WORLD_SIZE"]))


@dataclass
class RankReport:
    """What each rank did over the passes since the leader last reset (peak memory) or began."""

    passes: int = 0
    output_tokens: list[int] = field(default_factory=list)  # per rank, all passes
    peak_memory_bytes: list[int] = field(default_factory=list)  # per rank, since the last reset


class Ranks:
    """This rank's part: the leader's send/receive, or a follower's loop."""

    def __init__(self, device: Any):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.device = device
        # Every rank creates the group, in the same order (a collective call).
        self.control = dist.new_group(backend="gloo")
        self.report = RankReport(output_tokens=[0] * self.world_size, peak_memory_bytes=[0] * self.world_size)
        self._reset_pending = False

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def reset_peak_memory(self) -> None:
        self._reset_pending = True  # the followers reset with the next pass

    def announce(self, prompts: list[list[int]], generation_config: Any, batch_size: int) -> None:
        """Leader: tell the followers which pass to run (same prompts, same settings)."""
        message = {"prompts": prompts, "generation_config": generation_config, "batch_size": batch_size,
                   "reset_peak": self._reset_pending}
        self._reset_pending = False
        self.dist.broadcast_object_list([message], src=0, group=self.control)

    def stop(self) -> None:
        self.dist.broadcast_object_list([STOP], src=0, group=self.control)

    def finish_pass(self, rows: list[list[int]], counts: list[int]) -> None:
        """Every rank after a pass: gather (tokens, checksum, peak memory). The leader checks that every
        rank generated the same tokens (TP shards one model: the ranks' outputs must agree)."""
        import torch

        checksum = sum((i + 1) * t for row in rows for i, t in enumerate(row)) % (2**61 - 1)
        peak = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0
        mine = torch.tensor([sum(counts), checksum, peak], dtype=torch.int64)
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        self.dist.all_gather(gathered, mine, group=self.control)
        if not self.leader:
            return
        sums = {int(g[1]) for g in gathered}
        if len(sums) != 1:
            raise RuntimeError(f"tensor parallel ranks generated different tokens (checksums {sorted(sums)}): "
                               "the shards disagree")
        self.report.passes += 1
        for rank, g in enumerate(gathered):
            self.report.output_tokens[rank] += int(g[0])
            self.report.peak_memory_bytes[rank] = int(g[2])

    def follow(self, run: Callable[[list[list[int]], Any, int], None]) -> int:
        """Follower: run each pass the leader announces until it stops; returns the passes run."""
        import torch

        passes = 0
        while True:
            box: list[Optional[dict]] = [None]
            self.dist.broadcast_object_list(box, src=0, group=self.control)
            message = box[0]
            if message is STOP:
                return passes
            if message["reset_peak"] and self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            run(message["prompts"], message["generation_config"], message["batch_size"])
            passes += 1

    def describe(self) -> dict[str, Any]:
        """The result's record of the launch (effective.tensor_parallel)."""
        return {"world_size": self.world_size, "rank": self.rank, "process_group_backend": self.backend,
                "control_backend": "gloo", "device": str(self.device), "launcher": "torchrun",
                "ranks": [{"rank": r, "output_tokens": self.report.output_tokens[r],
                           "peak_memory_bytes": self.report.peak_memory_bytes[r] or None}
                          for r in range(self.world_size)],
                "passes_checked": self.report.passes,
                "check": "after every pass all ranks' generated tokens were compared (checksum): identical"}
