"""The gateway's settings, one place, environment variables with the ``DEEPFAKE_`` prefix.

The names are the service contract the Compose and Kubernetes manifests rely on; do not rename them.
Built on deepfake.settings: the service token, the duration limit and the upload rules are declared
once there (or in deepfake.uploads) for the gateway and the preprocessor alike.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from deepfake.settings import MaxDurationSettings, ServiceTokenSettings
from deepfake.uploads import UploadSpoolSettings
from gateway.auth import owner_of


class GatewaySettings(MaxDurationSettings, ServiceTokenSettings, UploadSpoolSettings):
    api_keys: str = Field("", description="Accepted API keys, comma-separated (header X-API-Key).")
    auth_disabled: bool = Field(
        False,
        description="Accept requests without a key: local use only (off: without keys every request gets "
        "401).",
    )
    preprocessor_url: str = Field("http://127.0.0.1:8081", description="Preprocessor base URL.")
    preprocessor_timeout_s: float = Field(900.0, gt=0, description="Longest wait for one analysis.")
    job_store_url: str = Field(
        "sqlite:///./.run/jobs.sqlite",
        description="Where jobs persist: sqlite:///path (one gateway) or postgresql://user:password@host/db "
        "(replicas sharing the jobs; gateway.jobs).",
    )
    job_lease_s: float = Field(
        30.0,
        gt=0,
        description="How long a replica's claim on a running job holds without renewal (renewed every "
        "third of it): a job whose replica died is run again by another after at most about this long.",
    )
    upload_dir: Path = Field(
        Path(".run/uploads"),
        description="Where uploads wait (jobs survive restarts); with several replicas, one folder all of "
        "them mount at this same path (a ReadWriteMany volume).",
    )
    evidence_dir: Path | None = Field(
        None,
        description="Where jobs' evidence images are kept (one folder per job, removed with the job); "
        "default: `evidence` beside UPLOAD_DIR (.run/evidence).",
    )

    def evidence_root(self) -> Path:
        """EVIDENCE_DIR, else beside the upload folder: both are this replica's job data."""
        return self.evidence_dir or self.upload_dir.parent / "evidence"

    max_upload_bytes: int = Field(500 * 1024**2, ge=1, description="Largest accepted upload in bytes.")
    sync_max_duration_s: float = Field(
        120.0, gt=0, description="Longest video POST /v1/detections analyses synchronously; use jobs beyond."
    )
    rate_limit_per_minute: int = Field(
        60, ge=0, description="Requests per minute per API key (per replica); 0: no limit."
    )
    auth_failure_limit: int = Field(
        10,
        ge=0,
        description="Wrong API keys one client address may send per window before it gets 429; 0: no limit.",
    )
    auth_failure_window_s: float = Field(
        300.0, gt=0, description="The window of auth_failure_limit, and how long a throttled address waits."
    )
    trusted_proxies: str = Field(
        "",
        description="Addresses/CIDR networks of reverse proxies (the Ingress controller) whose "
        "X-Forwarded-For names the client (comma-separated); none: the peer address is the client.",
    )
    job_workers: int = Field(2, ge=0, description="Jobs this replica runs at once; 0: accept only.")
    job_poll_s: float = Field(1.0, gt=0, description="How often idle job workers look for queued jobs.")
    job_retry_budget_s: float = Field(
        300.0,
        ge=0,
        description="How long a job is retried while the analysis service is unavailable (preprocessor "
        "unreachable, 503 busy / not ready / Triton unavailable, timeouts), counted from its first such "
        "failure; then it fails with retries_exhausted. 0: never retried. Client faults (4xx) fail at once.",
    )
    job_retry_backoff_s: float = Field(
        2.0, gt=0, description="Wait before a job's first retry; doubles each retry (with jitter)."
    )
    job_retry_backoff_max_s: float = Field(60.0, gt=0, description="Longest wait between two job retries.")
    callback_timeout_s: float = Field(5.0, gt=0, description="Timeout of one completion-callback POST.")
    callback_attempts: int = Field(3, ge=1, description="Tries of a completion callback before giving up.")
    callback_secret: SecretStr = Field(
        SecretStr(""),
        description="Key of the HMAC-SHA256 callback signature (X-Deepfake-Signature) for every API key "
        "without its own; with neither, callback_url is refused.",
    )
    callback_key_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Per-API-key callback signing keys, JSON: {"<api key>": "<secret>", ...}.',
    )
    callback_http_hosts: str = Field(
        "", description="Hosts callbacks may reach over plain http (comma-separated); https only otherwise."
    )
    callback_allowed_hosts: str = Field(
        "",
        description="Host names, IP addresses and CIDR networks callbacks may reach although they are "
        "loopback, private or link-local (comma-separated): an operator's internal receiver.",
    )

    public_url: str = Field(
        "",
        description="The gateway's public base URL (e.g. https://detector.example): the base of the absolute "
        "status_url/result_url, Location headers, callback payloads and the OpenAPI `servers`. Empty: the "
        "URL each request came in on (callbacks then carry paths).",
    )

    def base_url_for(self, request_base_url: str) -> str:
        """The base of the absolute URLs in answers: ``public_url`` when set, else the request's own."""
        return (self.public_url or request_base_url).rstrip("/")

    stream_max_per_key: int = Field(
        2, ge=0, description="Live streams (/v1/streams) one API key may have open at once; more: 4429."
    )
    stream_max_frame_bytes: int = Field(
        4 * 1024**2, ge=1, description="Largest frame message of a live stream in bytes; larger: 4413."
    )
    stream_max_frame_pixels: int = Field(
        3840 * 2160, ge=1, description="Largest frame of a live stream (width x height, 4K); larger: 4413."
    )
    stream_min_frame_side: int = Field(
        32, ge=8, description="Frames of a live stream with a shorter side than this are refused (4422)."
    )
    stream_idle_timeout_s: float = Field(
        10.0, gt=0, description="A live stream that sends nothing for this long is closed (4408)."
    )

    cors_origins: str = Field(
        "", description="Browser origins allowed to call the API (comma-separated, e.g. https://app.example)."
    )

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def api_key_set(self) -> frozenset[str]:
        return frozenset(key.strip() for key in self.api_keys.split(",") if key.strip())

    def callback_secret_for(self, owner: str) -> str | None:
        """The callback signing key of the API key whose owner id is `owner` (gateway.auth.owner_of), else
        CALLBACK_SECRET; None when neither is set."""
        for key, secret in self.callback_key_secrets.items():
            if owner_of(key.strip()) == owner and secret.get_secret_value():
                return secret.get_secret_value()
        return self.callback_secret.get_secret_value() or None
