"""A TRL/transformers callback that makes the reward service's probe follow the policy being trained.

Every ``every_n_steps`` optimizer steps, :class:`ServiceFollowsPolicy` saves the policy (and its tokenizer)
into ``save_dir/step-N`` and asks the service to load that folder into its running probe
(``POST /v1/admin/reload`` through :meth:`MigClient.reload`; the client's key must be an admin key, and
the folder must be on the service's disk). Requests already admitted finish on the old weights; every
annotation names the weights it was scored with (``probe_version``), and ``last_reload`` holds the
service's answer. Only the newest ``keep`` checkpoints stay on disk.

With ``MigGRPOTrainer(probe="service")`` this is the service-side way to the method's "policy as its own
probe"; ``probe="policy"`` does the same in process, without a save or a reload.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from mig_annotator.client.http import MigClient
from mig_annotator.schemas.api import ReloadResponse

__all__ = ["ServiceFollowsPolicy"]


class ServiceFollowsPolicy(TrainerCallback):  # type: ignore[misc]
    """Save the policy every ``every_n_steps`` steps and reload the service's probe from it."""

    def __init__(
        self, client: MigClient, save_dir: str | Path, every_n_steps: int = 1, keep: int = 2
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.client = client
        self.save_dir = Path(save_dir)
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.last_reload: ReloadResponse | None = None
        self.reloads: list[tuple[int, ReloadResponse]] = []  # (global step, the service's answer)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step % self.every_n_steps != 0 or not state.is_world_process_zero:
            return control
        model, tokenizer = kwargs["model"], kwargs.get("processing_class")
        folder = self.save_dir / f"step-{state.global_step}"
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        self.last_reload = self.client.reload(folder.resolve())
        self.reloads.append((state.global_step, self.last_reload))
        self._prune()
        return control

    def _prune(self) -> None:
        saved = sorted(self.save_dir.glob("step-*"), key=lambda p: int(p.name.removeprefix("step-")))
        for old in saved[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
