"""Thread settings for the research side's model jobs."""

from __future__ import annotations

from ..exceptions import InvalidInputError


def set_threads(threads: int) -> None:
    """Torch's intra-op threads for a model job; one by default, as the machine is shared."""
    import torch

    if threads < 1:
        msg = f"--threads must be >= 1, got {threads}."
        raise InvalidInputError(msg)
    torch.set_num_threads(threads)
