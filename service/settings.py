"""The service's settings: environment variables prefixed ``MIG_`` (nested groups use ``__``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mig_annotator.engine.probe.registry import ProbeSettings
from mig_annotator.engine.probe.settings import TransformersProbeSettings
from mig_annotator.schemas.api import RewardScalar
from mig_annotator.schemas.config import ScoringConfig
from mig_annotator.schemas.trace_images import ImageLimits


class ServiceSettings(BaseSettings):
    """Everything the reward service reads from its environment. Built once and passed to ``create_app``."""

    model_config = SettingsConfigDict(
        env_prefix="MIG_", env_nested_delimiter="__", extra="ignore", frozen=True, validate_default=True
    )

    # server
    host: str = Field(default="127.0.0.1", description="Address uvicorn binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port uvicorn binds (0: any free port).")
    log_level: str = Field(default="info", description="uvicorn's log level.")

    # probe and scoring defaults
    probe: ProbeSettings = Field(
        default_factory=TransformersProbeSettings,
        description="The probe (MIG_PROBE__BACKEND, MIG_PROBE__MODEL, MIG_PROBE__THREADS, ...; the key of a "
        "vllm-server: MIG_PROBE__API_KEY). Without MIG_PROBE__BACKEND: the transformers probe.",
    )
    scoring: ScoringConfig = Field(
        default_factory=ScoringConfig,
        description="Default scoring options (MIG_SCORING__WATERMARK=gain, ...); requests may override them.",
    )

    # limits
    max_body_bytes: int = Field(default=4_000_000, ge=1024, description="Largest request body (413).")
    max_traces_per_request: int = Field(default=64, ge=1, description="Traces in one request (413).")
    image_limits: ImageLimits = Field(
        default_factory=ImageLimits,
        description="Images in a question (MIG_IMAGE_LIMITS__MAX_IMAGES, __MAX_IMAGE_BYTES, "
        "__MAX_IMAGE_PIXELS); a request holds them as base64 data within MIG_MAX_BODY_BYTES (the service "
        "reads no image paths).",
    )
    max_steps_per_trace: int | None = Field(
        default=None,
        ge=1,
        description="Steps in one trace (422). None (default): no cap of its own; the probe's context bounds "
        "a trace (the steps cap of the scoring config, when set, merges steps instead of refusing).",
    )
    max_tokens_per_trace: int | None = Field(
        default=None,
        ge=16,
        description="Probe tokens of one trace: question, steps and answer prompt (422). None (default): "
        "what the loaded probe can take, its context length.",
    )
    request_timeout_s: float = Field(default=120.0, gt=0, description="Per-request deadline (504).")
    max_request_probe_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Tokens the probe may forward for one request, estimated from the engine's plan before "
        "any probe work (every windowed step counts as a full-context pass); a request over it is refused "
        "with 413 (a trace over it alone fails alone when the request is not strict). None (default): what "
        "the deadline can cover, the probe's tokens per second x MIG_REQUEST_TIMEOUT_S, within 4,096 and "
        "100,000,000 (GET /v1/info shows it and where it came from).",
    )
    probe_tokens_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Tokens per second the probe forwards, for the default MIG_MAX_REQUEST_PROBE_TOKENS. "
        "None (default): measured, by a short calibration pass when the probe is ready and then on every "
        "micro-batch served (400 until the first measurement).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers (from its opening or its "
        "previous response) before it is closed: slow or silent clients hold no connection for ever.",
    )
    keep_alive_s: float = Field(
        default=5.0, gt=0, description="Seconds an idle keep-alive connection stays open between requests."
    )
    max_connections: int = Field(
        default=512,
        ge=1,
        description="Concurrent connections and requests served at once; over it, new requests get 503.",
    )
    reload_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest a reload may take to check and load a checkpoint folder (then 422, the probe "
        "keeps its weights and the next reload may start).",
    )
    max_request_image_pixels: int | None = Field(
        default=None,
        ge=1,
        description="Pixels of the images one request's traces hold (each image counted for every trace "
        "that holds it: each is prepared for the probe), read from the images' bytes and checked before "
        "any image is decoded; a request over it is refused with 413. None (default): what the deadline "
        "can cover, MIG_IMAGE_PIXELS_PER_SECOND x MIG_REQUEST_TIMEOUT_S.",
    )
    image_pixels_per_second: float = Field(
        default=5_000_000.0,
        gt=0,
        description="Image pixels per second the probe's processor prepares (decode, resize, normalise), "
        "for the default MIG_MAX_REQUEST_IMAGE_PIXELS (a tiny Idefics3 processor on one CPU thread: about "
        "5 to 10 million; set it to what your hardware measures).",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        gt=0,
        description="On SIGTERM/SIGINT: seconds open requests may take to finish before they are cancelled; "
        "then running probe work is abandoned at its next forward pass and the process exits.",
    )

    # micro-batching
    micro_batch_tokens: int = Field(
        default=16384,
        ge=64,
        description="Token budget of one micro-batch (the traces' probe tokens). Not the probe's "
        "forward-pass budget (MIG_PROBE__FORWARD_BATCH_TOKENS).",
    )
    batch_max_wait_ms: float = Field(
        default=5.0, ge=0, description="How long a micro-batch waits for more traces once one arrived."
    )
    exact_batching: bool | None = Field(
        default=None,
        description="True: each GRPO group of a micro-batch (consecutive traces of one group_id, else one "
        "question) gets a probe call of its own, so a trace's numbers never depend on the other groups in "
        "flight (MIG_PROBE__GROUP_PREFIXES=false: each trace alone). "
        "False: a batch's traces share forward passes (may differ in the last float bits). "
        "None (auto): True for the embedded transformers probe, False for vLLM backends (not batch "
        "invariant anyway, and they score a batch's traces concurrently).",
    )
    queue_max_traces: int = Field(
        default=256,
        ge=1,
        description="Traces waiting for the probe (429 above); must be at least MIG_MAX_TRACES_PER_REQUEST, "
        "or the largest requests could never be admitted.",
    )

    # outcome checking
    outcome_timeout_s: float = Field(
        default=5.0, gt=0, description="Hard limit on checking one answer with math-verify (then outcome 0)."
    )
    verifier_workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Answer-check worker processes: this many slow answers are checked at once.",
    )

    # access
    api_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Bearer API keys as a JSON object {"key id": "key"}; empty: no auth.',
    )
    admin_key_ids: list[str] = Field(
        default_factory=list,
        description="Ids of MIG_API_KEYS that may call the admin endpoints (POST /v1/admin/reload); "
        "others get 403. Without API keys the admin endpoints are not served.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Allowed CORS origins; empty: CORS off."
    )

    # audit log
    audit_enabled: bool = Field(default=True, description="Append every served annotation to the audit log.")
    audit_dir: Path = Field(default=Path("mig-audit"), description="Where audit segments are written.")
    audit_segment_rows: int = Field(default=5000, ge=1, description="Rows per Parquet segment at most.")
    audit_flush_s: float = Field(
        default=10.0, gt=0, description="Seconds before buffered rows are sealed into a Parquet segment."
    )
    audit_max_pending_rows: int = Field(
        default=200_000, ge=1, description="Rows held in memory while the audit log cannot be written."
    )

    # OpenRLHF endpoint
    openrlhf_reward: RewardScalar = Field(
        default="mixed",
        description="The scalar OpenRLHF gets: outcome, process, or outcome + lambda * process.",
    )
    openrlhf_lambda: float = Field(default=1.0, description="lambda of the mixed scalar.")
    openrlhf_fallback_reward: float = Field(
        default=0.0,
        description="The reward a query gets when its trace cannot be scored (counted in "
        "mig_fallback_rewards); the batch's other queries are scored.",
    )
    openrlhf_strip_suffixes: list[str] = Field(
        default_factory=lambda: ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"],
        description="End-of-text markers removed from the end of a query's response before scoring.",
    )

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServiceSettings:
        if self.queue_max_traces < self.max_traces_per_request:
            raise ValueError(
                f"MIG_QUEUE_MAX_TRACES ({self.queue_max_traces}) must be at least MIG_MAX_TRACES_PER_REQUEST "
                f"({self.max_traces_per_request}), or the largest requests could never be admitted"
            )
        return self

    @property
    def request_image_pixels(self) -> int:
        """The per-request budget of image pixels (``max_request_image_pixels`` resolved)."""
        if self.max_request_image_pixels is not None:
            return self.max_request_image_pixels
        return max(1, int(self.image_pixels_per_second * self.request_timeout_s))

    @property
    def exact(self) -> bool:
        """Whether micro-batches are scored one trace per forward pass (``exact_batching`` resolved)."""
        if self.exact_batching is not None:
            return self.exact_batching
        return self.probe.backend == "transformers"

    def api_key_ids(self) -> dict[str, str]:
        """key -> key id, for authentication."""
        return {secret.get_secret_value(): key_id for key_id, secret in self.api_keys.items()}
