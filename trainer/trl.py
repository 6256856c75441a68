"""TRL's ``GRPOTrainer`` trained the method's way: per-token decoupled advantages and the gated SFT term.

:class:`MigGRPOTrainer` asks the reward service once per batch (one ``MigClient.annotate_results`` call
for all the batch's completions), places each annotation on the completion's policy tokens
(:func:`~mig_annotator.schemas.token_alignment.token_offsets` + ``align_annotation``), and replaces TRL's
one-advantage-per-completion with :func:`~mig_annotator.trainer.advantages.group_token_advantages` over
each group of ``num_generations`` consecutive completions (TRL's (B, T) advantage shape). The outcome
advantage covers every token TRL trains (its ``completion_mask``, EOS included). The loss gains
``sft_weight * NLL``, the token-mean negative log-likelihood over the completions whose SFT gate is open
(correct and max_k r_k > sft_threshold); ``mig/sft_nll`` and ``mig/sft_gate_open`` are logged.
A completion the service cannot score (or with no text) is left out of its group's statistics and gets
advantage 0 everywhere. Single process only (groups must be local).

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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
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

__all__ = ["MigGRPOTrainer", "ProbeChoice"]

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

        def mig_mixed(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float]:
            self._batch_annotations = self.score_completions(prompts, completions, columns)
            return [
                a.outcome + a.process_reward if a is not None else float("nan")
                for a in self._batch_annotations
            ]

        kwargs["reward_funcs"] = [mig_mixed]  # TRL logs it; the advantages below replace TRL's
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes > 1:
            raise ValueError("MigGRPOTrainer runs in one process (the groups must be local)")
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
        credits = [
            self._credit(annotation, completion_ids[row], mask[row])
            for row, annotation in enumerate(self._batch_annotations)
        ]
        size = self.num_generations if self.model.training else self.num_generations_eval
        rows: list[np.ndarray] = []
        for start in range(0, len(credits), size):
            rows.extend(group_token_advantages(credits[start : start + size], self.mig_settings))
        advantages = torch.tensor(np.stack(rows), dtype=torch.float32, device=completion_ids.device)
        gates = [sft_gate(credit, self.mig_settings) for credit in credits]
        output["advantages"] = advantages
        output["mig_sft_gate"] = torch.tensor(gates, dtype=torch.bool, device=completion_ids.device)
        self.mig_used_advantages.append(advantages.detach().cpu().clone())
        self.mig_used_gates.append(gates)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["mig/sft_gate_open"].append(float(sum(gates)))
        self._metrics[mode]["mig/unscored"].append(float(sum(a is None for a in self._batch_annotations)))
        return output

    def _credit(
        self, annotation: TraceAnnotation | None, ids: torch.Tensor, mask: torch.Tensor
    ) -> CompletionCredit:
        if annotation is None:
            return unscored(len(ids))
        offsets = token_offsets(self.processing_class, ids.tolist(), annotation.completion)
        credit = credit_from_annotation(annotation, offsets)
        # the outcome covers every token TRL trains (EOS included), not only the tokens that cover text
        return dataclasses.replace(credit, completion_mask=mask.bool().cpu().numpy())

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        loss = super()._compute_loss(model, inputs)
        gate = inputs.get("mig_sft_gate")
        mode = "train" if self.model.training else "eval"
        if gate is None or self.mig_settings.sft_weight == 0 or not bool(gate.any()):
            self._metrics[mode]["mig/sft_nll"].append(0.0)
            return loss
        nll = self.sft_nll(model, inputs, gate)
        self._metrics[mode]["mig/sft_nll"].append(float(nll.detach()))
        return loss + self.mig_settings.sft_weight * nll

    def sft_nll(self, model: Any, inputs: Mapping[str, Any], gate: torch.Tensor) -> torch.Tensor:
        """Token-mean NLL of the completion tokens of the gated rows (one more forward pass over them)."""
        prompt_ids, prompt_mask = inputs["prompt_ids"][gate], inputs["prompt_mask"][gate]
        completion_ids, completion_mask = inputs["completion_ids"][gate], inputs["completion_mask"][gate]
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
        )
        weights = completion_mask.to(logps.dtype)
        return -(logps * weights).sum() / weights.sum().clamp(min=1.0)
