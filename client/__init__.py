"""Trainer-side access to the reward service: HTTP clients and adapters for TRL and verl.

Depends only on ``mig_annotator.schemas`` plus httpx, numpy and pydantic, so the base install
(``pip install mig-annotator``, no engine extras) is enough. torch is imported only inside the verl
reward manager's call, where verl has already loaded it.

* :mod:`.http`: :class:`MigClient` / :class:`AsyncMigClient` (one request plan, two drivers).
* :mod:`.trl`: :func:`trl_reward_function` / :func:`async_trl_reward_function` for
  ``GRPOTrainer(reward_funcs=[...])``.
* :mod:`.fallback`: :class:`RewardFallback`, what adapters answer for a failed trace or a service outage.
* :mod:`.verl_reward_loop` (needs verl >= 0.9): ``MigRewardLoopManager`` for verl's reward loop.
* :mod:`.verl`: :func:`compute_score` (verl's ``custom_reward_function``) and :class:`MigRewardManager`
  (token-level rewards, placed by :mod:`mig_annotator.schemas.token_alignment`).
"""

from mig_annotator.client.fallback import RewardFallback
from mig_annotator.client.http import (
    API_KEY_ENV,
    DEFAULT_URL,
    URL_ENV,
    AsyncMigClient,
    MigClient,
    MigServiceError,
    MigServiceUnavailable,
    TokenRewards,
    TraceFailure,
    TraceResult,
)
from mig_annotator.client.trl import async_trl_reward_function, trl_reward_function
from mig_annotator.client.verl import MigRewardManager, compute_score, register_verl_reward_manager

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_URL",
    "URL_ENV",
    "AsyncMigClient",
    "MigClient",
    "MigRewardManager",
    "MigServiceError",
    "MigServiceUnavailable",
    "RewardFallback",
    "TokenRewards",
    "TraceFailure",
    "TraceResult",
    "async_trl_reward_function",
    "compute_score",
    "register_verl_reward_manager",
    "trl_reward_function",
]
