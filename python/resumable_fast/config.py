"""Configuration: keyword arguments first, then S2's and the seed's env names."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from resumable_fast.endpoints import Proxy, Verify
from resumable_fast.errors import ConfigurationError
from resumable_fast.records import MAX_BATCH_BYTES, MAX_BATCH_RECORDS

__all__ = ["DEFAULT_ACCOUNT_ENDPOINT", "DEFAULT_BASIN_ENDPOINT", "BatchSettings", "S2Config"]

DEFAULT_ACCOUNT_ENDPOINT = "https://aws.s2.dev"
DEFAULT_BASIN_ENDPOINT = "https://{basin}.b.aws.s2.dev"
# Up to 100 records an append: a source faster than 500 tokens/s fills one
# before the linger is up; 10 (S2's package's default) cost unpaced streams
# 2.3x the CPU per token of a bare task handoff, 100 costs 1.3x
# (docs/design.md, "The default batch size").
DEFAULT_BATCH_SIZE = 100
# At 50 tokens/s a 200 ms linger seals batches of 10 tokens, half the appends
# of 100 ms, while a reader in another context still has each token within
# 250 ms (p99; docs/design.md, "The default linger").
DEFAULT_LINGER_MS = 200.0
# How long a request to S2 is retried through transient faults (seconds).
DEFAULT_RETRY_DEADLINE = 60.0

_BASIN_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{6,46})[a-z0-9]$")


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


def _api_root(endpoint: str, option: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(f"{option} must be an http:// or https:// URL, got {endpoint!r}")
    return endpoint if endpoint.endswith("/v1") else endpoint + "/v1"


def validate_basin_name(basin: str) -> str:
    if not isinstance(basin, str) or not _BASIN_NAME.match(basin):
        raise ConfigurationError(
            "basin must be 8-48 characters of lowercase letters, digits and hyphens, "
            f"not starting or ending with a hyphen; got {basin!r}"
        )
    return basin


@dataclass(frozen=True)
class S2Config:
    """Where and how to reach S2. The access token never appears in its repr."""

    basin: str
    access_token: str | None = field(default=None, repr=False)
    account_endpoint: str = DEFAULT_ACCOUNT_ENDPOINT
    basin_endpoint: str = DEFAULT_BASIN_ENDPOINT
    request_timeout: float = 30.0
    retry_deadline: float = DEFAULT_RETRY_DEADLINE
    verify: Verify = True
    """True (certifi's CAs, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` with
    ``trust_env``), False, a CA bundle file or directory, or an
    :class:`ssl.SSLContext` (``truststore.SSLContext`` for the OS's store)."""
    proxy: str | None = None
    """An ``http://`` proxy for every request (else the environment's)."""
    trust_env: bool = True
    """Honour ``SSL_CERT_FILE``, ``SSL_CERT_DIR``, ``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``."""

    def __post_init__(self) -> None:
        validate_basin_name(self.basin)
        if self.request_timeout <= 0:
            raise ConfigurationError("request_timeout must be > 0")
        if not isinstance(self.retry_deadline, (int, float)) or not self.retry_deadline > 0:
            raise ConfigurationError(
                f"retry_deadline must be > 0 seconds, got {self.retry_deadline!r}"
            )
        _api_root(self.account_endpoint, "account_endpoint")
        _api_root(self.basin_endpoint, "basin_endpoint")
        if not isinstance(self.verify, (bool, str, os.PathLike, ssl.SSLContext)):
            raise ConfigurationError(
                "verify must be True, False, a CA bundle path or an ssl.SSLContext"
            )
        if self.proxy is not None:
            Proxy.parse(self.proxy)  # raises ConfigurationError if it is not one

    @property
    def account_url(self) -> str:
        """The account API root, ending in ``/v1``."""
        return _api_root(self.account_endpoint, "account_endpoint")

    @property
    def shared_basin_endpoint(self) -> bool:
        """True when one endpoint serves every basin (s2-lite): calls name the basin
        in an ``s2-basin`` header instead of the host name."""
        return "{basin}" not in self.basin_endpoint

    @property
    def basin_url(self) -> str:
        """The basin API root, ending in ``/v1``."""
        endpoint = self.basin_endpoint.replace("{basin}", self.basin)
        return _api_root(endpoint, "basin_endpoint")

    def __repr__(self) -> str:
        token = "None" if self.access_token is None else "'***'"
        return (
            f"S2Config(basin={self.basin!r}, access_token={token}, "
            f"account_endpoint={self.account_endpoint!r}, basin_endpoint={self.basin_endpoint!r})"
        )

    @classmethod
    def from_options(
        cls,
        *,
        basin: str | None = None,
        access_token: str | None = None,
        account_endpoint: str | None = None,
        basin_endpoint: str | None = None,
        request_timeout: float | None = None,
        retry_deadline: float | None = None,
        verify: Verify | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> S2Config:
        """Explicit arguments win; unset ones come from the environment, then defaults."""
        env = os.environ if env is None else env
        basin = basin if basin is not None else env.get("S2_BASIN")
        if not basin:
            raise ConfigurationError("no S2 basin: pass basin= or set S2_BASIN")
        return cls(
            basin=basin,
            access_token=access_token if access_token is not None else env.get("S2_ACCESS_TOKEN"),
            account_endpoint=account_endpoint
            or env.get("S2_ACCOUNT_ENDPOINT")
            or DEFAULT_ACCOUNT_ENDPOINT,
            basin_endpoint=basin_endpoint or env.get("S2_BASIN_ENDPOINT") or DEFAULT_BASIN_ENDPOINT,
            request_timeout=request_timeout if request_timeout is not None else 30.0,
            retry_deadline=retry_deadline if retry_deadline is not None else DEFAULT_RETRY_DEADLINE,
            verify=True if verify is None else verify,
            proxy=proxy,
            trust_env=trust_env,
        )


@dataclass(frozen=True)
class BatchSettings:
    """How the producer batches chunks into appends, on either backend."""

    batch_size: int = DEFAULT_BATCH_SIZE
    linger_ms: float = DEFAULT_LINGER_MS
    max_batch_bytes: int = MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ConfigurationError(f"batch_size must be an int, got {self.batch_size!r}")
        if not 1 <= self.batch_size <= MAX_BATCH_RECORDS:
            raise ConfigurationError(
                f"batch_size must be between 1 and {MAX_BATCH_RECORDS}, got {self.batch_size}"
            )
        if not 1 <= self.max_batch_bytes <= MAX_BATCH_BYTES:
            raise ConfigurationError(
                f"max_batch_bytes must be between 1 and {MAX_BATCH_BYTES}, "
                f"got {self.max_batch_bytes}"
            )
        if not isinstance(self.linger_ms, (int, float)) or not 0 <= self.linger_ms < 3_600_000:
            raise ConfigurationError(
                f"linger_ms must be a number of milliseconds >= 0, got {self.linger_ms!r}"
            )

    @classmethod
    def from_options(
        cls,
        *,
        batch_size: int | None = None,
        linger_ms: float | None = None,
        max_batch_bytes: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> BatchSettings:
        """Explicit arguments win over the seed's ``S2_BATCH_SIZE`` and
        ``S2_LINGER_DURATION`` (milliseconds), then the defaults."""
        env = os.environ if env is None else env
        env_batch = _env_int(env, "S2_BATCH_SIZE")
        env_linger = _env_float(env, "S2_LINGER_DURATION")
        return cls(
            batch_size=batch_size
            if batch_size is not None
            else (env_batch if env_batch is not None else DEFAULT_BATCH_SIZE),
            linger_ms=linger_ms
            if linger_ms is not None
            else (env_linger if env_linger is not None else DEFAULT_LINGER_MS),
            max_batch_bytes=max_batch_bytes if max_batch_bytes is not None else MAX_BATCH_BYTES,
        )
