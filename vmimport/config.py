"""Configuration: flags > environment (``VMIMPORT_*``) > config file (TOML) > embedded defaults.

The embedded default is the convention of local AWS emulators: one account ``000000000000`` whose
access key and secret are both ``test``, region ``us-east-1``. Because everyone knows those
credentials, a server using them refuses to listen on anything but loopback.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ACCOUNT_ID = "000000000000"
DEFAULT_ACCESS_KEY = "test"
DEFAULT_SECRET_KEY = "test"
# api_processes = 0: one per core, up to this many (API calls are small: past a few cores the
# database, not Python, sets the pace, and each process holds its own ~100 MiB).
MAX_AUTO_API_PROCESSES = 8


class Credential(BaseModel):
    """An access key pair and the account it acts for."""

    access_key: str
    secret_key: str
    account_id: str = Field(pattern=r"^\d{12}$")
    # Actions this key may call (shell-style patterns: "Describe*"); others are refused with
    # UnauthorizedOperation, and DryRun answers accordingly.
    actions: list[str] = Field(default_factory=lambda: ["*"])


def _default_credentials() -> list[Credential]:
    return [Credential(access_key=DEFAULT_ACCESS_KEY, secret_key=DEFAULT_SECRET_KEY,
                       account_id=DEFAULT_ACCOUNT_ID)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VMIMPORT_", env_nested_delimiter="__",
                                      extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = Path("./data")
    # The block store (snapshots' blocks and manifests): file:///path; empty = <data_dir>/blocks;
    # s3://bucket/prefix/ on the S3-compatible store of the blocks_s3_* settings.
    blocks_url: str = ""
    # The object store of an s3:// blocks_url (not the source buckets' s3_*): its endpoint
    # (empty: the SDK's default), keys (empty: the SDK's credential chain) and region.
    blocks_s3_endpoint_url: str = ""
    blocks_s3_access_key: str = ""
    blocks_s3_secret_key: str = ""
    blocks_s3_region: str = "us-east-1"
    # `vmimport gc` deletes a crash leftover of the block store (a partial pack, a half-written
    # manifest) that no live process holds once it is this old; sooner if its writer was a
    # process of this host that is gone.
    gc_leftover_grace_hours: float = Field(default=24.0, ge=0)
    # Workers run gc this often (0: only `vmimport gc`); the workers of every machine take
    # turns, so it runs once per interval for the whole installation.
    gc_every_hours: float = Field(default=0.0, ge=0)
    # gc copies the blocks still in use out of a pack that manifests use at most this fraction
    # of (and 8 MiB or more of it unused), so that the pack can be reclaimed (0: never).
    gc_compact_below: float = Field(default=0.5, ge=0, le=1)
    # SQLAlchemy URL; empty means SQLite at <data_dir>/vmimport.db.
    database_url: str = ""
    region: str = "us-east-1"
    credentials: list[Credential] = Field(default_factory=_default_credentials)

    # Workers: threads run by `serve` (0 = API only), and the job lease.
    workers: int = 2
    # How much lower than the API `serve`'s worker process runs (nice(2) increment): while
    # imports keep the cores busy, polling (Describe*) and ImportImage stay fast.
    worker_niceness: int = Field(default=5, ge=0, le=19)
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 2.0
    poll_seconds: float = 0.5
    max_attempts: int = 5

    # Source buckets: DIR/buckets/<bucket>/<key> first; otherwise this S3-compatible endpoint.
    s3_endpoint_url: str = ""
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"

    # S3 on this endpoint. A bucket directory made by hand under DIR/buckets (not by
    # CreateBucket) belongs to this account.
    s3_local_bucket_owner: str = Field(default=DEFAULT_ACCOUNT_ID, pattern=r"^\d{12}$")
    # Virtual-hosted-style addressing: a Host of <bucket>.<suffix>[:port] names the bucket,
    # for each of these suffixes (the host this server is reached by).
    s3_virtual_host_suffixes: list[str] = Field(default_factory=lambda: ["localhost"])
    # Threads that stream S3 request bodies to disk (and so wait on the network), apart from
    # the api_threads that run database work.
    s3_transfer_threads: int = Field(default=16, ge=1)
    # `vmimport gc` removes multipart uploads (and PUTs cut off mid-body) untouched this long.
    s3_abandoned_upload_days: float = Field(default=7.0, ge=0)

    # Url=https://... sources: the hosts that may be fetched (shell patterns; empty = none),
    # and whether plain http is allowed too. Redirects are never followed.
    url_allowed_hosts: list[str] = Field(default_factory=list)
    url_allow_http: bool = False

    # Safety bounds for images (see README "Formats and limits").
    max_virtual_size: int = 16 * 1024**4
    # Upper bound on one import's speed in bytes of disk data per second (0 = none; holes are
    # not read, so not counted), to leave disk and network bandwidth to the rest of the host.
    import_max_bytes_per_second: float = 0.0
    # Guest inspection gives up (and refuses the image) after this long.
    inspect_deadline_seconds: float = 10.0
    # The `booting` phase: start each imported image in QEMU (needs qemu-system-x86, and ovmf
    # for UEFI images) and fail the import unless it reaches init within boot_check_seconds.
    boot_check: bool = False
    boot_check_seconds: float = Field(default=300.0, gt=0)
    boot_check_memory_mib: int = Field(default=512, ge=64, le=8192)
    # Threads used to inflate compressed grains.
    inflate_threads: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2))

    # Requests per second per access key before RequestLimitExceeded (0 = unlimited).
    rate_limit_per_second: float = 0.0
    # Threads that run API handlers (database work) at once, in each API process. Handlers
    # are Python and share one interpreter lock, so more threads only queue at it: under 32
    # connections asking for 100 tasks each, 40 threads (Starlette's default) answered
    # 51 req/s with p99 1.3 s, 4 threads 86 req/s; on SQLite 2 threads (one for a lone key)
    # answered 30% more than 4 at 30% less CPU a request (SQLite gives the lock back for
    # every row it steps, and threads queued for it took turns row by row). More help only
    # with a database far away.
    api_threads: int = Field(default=2, ge=1)
    # Processes that answer the API on the one port (0: one per core, at most
    # MAX_AUTO_API_PROCESSES). Each has its own interpreter lock, so calls use every core:
    # on 2 cores, 2 processes answered 2.1x the calls of one (more than 2 answered no more).
    # The per-key request rate is shared by all of them; api_threads and the per-key share
    # of them are each process's own.
    api_processes: int = Field(default=0, ge=0)
    # Of those, how many one access key may use at once (0: all but one, so that a client
    # busy with costly requests always leaves a thread to the others).
    api_threads_per_key: int = Field(default=0, ge=0)
    # Seconds an idle client connection is kept open. uvicorn's 5 s default dropped SDK
    # connections between calls (a "socket hang up" after a 6 s pause); AWS endpoints keep
    # them about a minute, so SDKs expect at least that.
    keep_alive_seconds: int = Field(default=75, ge=1)
    # Days a finished task stays visible to Describe* (AWS: 7).
    task_retention_days: float = 7.0

    log_level: str = "info"
    # "text" (one line per record) or "json" (one JSON object per line, for log collectors).
    log_format: Literal["text", "json"] = "text"
    # Who may read GET /metrics (no signature is asked): clients in these networks. Empty:
    # no one (the page answers 404). Behind a proxy on this host, the proxy's client counts.
    metrics_allowed_networks: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"])

    # KMS: the root key that seals every KMS key's material (32 bytes, base64). Either given
    # here (VMIMPORT_KMS_ROOT_KEY), or read from a file (VMIMPORT_KMS_ROOT_KEY_FILE: the raw 32
    # bytes or their base64); with neither, <data_dir>/kms-root.key is generated (mode 0600).
    kms_root_key: str = ""
    kms_root_key_file: Path | None = None

    @property
    def buckets_dir(self) -> Path:
        return self.data_dir / "buckets"

    @property
    def default_kms_root_key_file(self) -> Path:
        return self.data_dir / "kms-root.key"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'vmimport.db').resolve()}"

    def uses_default_credentials(self) -> bool:
        return any(c.access_key == DEFAULT_ACCESS_KEY and c.secret_key == DEFAULT_SECRET_KEY
                   for c in self.credentials)

    def api_process_count(self) -> int:
        """How many API processes ``serve`` runs (``api_processes``, 0 resolved)."""
        if self.api_processes:
            return self.api_processes
        return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_API_PROCESSES))

    def check_listen_address(self) -> None:
        """Refuse a non-loopback address while the well-known default credentials are active."""
        if not self.uses_default_credentials():
            return
        if self.host == "localhost":
            return
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SystemExit(
                f"refusing to listen on {self.host}: the default credentials (test/test) are "
                "active. Configure your own credentials (VMIMPORT_CREDENTIALS or the config "
                "file) or listen on 127.0.0.1.")


def load_settings(config_file: str | os.PathLike | None = None, **overrides) -> Settings:
    """Build settings from a TOML file (if given, or VMIMPORT_CONFIG), the environment, and
    explicit overrides (command-line flags), the latter winning."""
    config_file = config_file or os.environ.get("VMIMPORT_CONFIG")
    file_values: dict = {}
    if config_file:
        with open(config_file, "rb") as f:
            file_values = tomllib.load(f)
    env_settings = Settings()  # environment + defaults
    env_explicit = env_settings.model_dump(exclude_unset=True)
    merged = {**file_values, **env_explicit,
              **{k: v for k, v in overrides.items() if v is not None}}
    return Settings.model_validate(merged) if merged else env_settings
