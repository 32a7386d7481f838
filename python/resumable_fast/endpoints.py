"""How to reach an endpoint: its origin, which TLS certificates to trust, and
which proxy (if any) to go through, set up as httpx does it; and the
:class:`Redactor` that keeps the credentials we send out of whatever an
answer puts in a message."""

from __future__ import annotations

import base64
import os
import ssl
import string
import urllib.request
from dataclasses import dataclass, field
from typing import NamedTuple, Union
from urllib.parse import quote, unquote, urlsplit

import orjson

from resumable_fast.errors import ConfigurationError

__all__ = ["REDACTED", "Origin", "Proxy", "Redactor", "Verify", "make_ssl_context", "proxy_for"]

Verify = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]
"""What ``verify=`` takes: True, False, a CA bundle file or directory, or an
:class:`ssl.SSLContext`."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("an endpoint must be an http:// or https:// URL with a host")
        try:
            port = parts.port
        except ValueError:
            raise ConfigurationError("an endpoint's port must be a number") from None
        default_port = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default_port)

    @property
    def authority(self) -> str:
        """``host[:port]`` as the Host header and CONNECT name it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default_port = 443 if self.scheme == "https" else 80
        return host if self.port == default_port else f"{host}:{self.port}"


def make_ssl_context(verify: Verify, *, trust_env: bool) -> ssl.SSLContext:
    """The client TLS context for ``verify``, as httpx makes it: True trusts
    ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when ``trust_env`` and they are set,
    else certifi's bundle; a path trusts that CA bundle (or directory); False
    verifies nothing; a context is used as it is (``truststore.SSLContext``
    gives the operating system's trust store)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        cert_file = os.environ.get("SSL_CERT_FILE") if trust_env else None
        cert_dir = os.environ.get("SSL_CERT_DIR") if trust_env else None
        if cert_file and os.path.isfile(cert_file):
            return ssl.create_default_context(cafile=cert_file)
        if cert_dir and os.path.isdir(cert_dir):
            return ssl.create_default_context(capath=cert_dir)
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    path = os.fspath(verify)
    if os.path.isdir(path):
        return ssl.create_default_context(capath=path)
    if os.path.isfile(path):
        return ssl.create_default_context(cafile=path)
    raise ConfigurationError(f"verify names no CA bundle file or directory: {path!r}")


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy; ``authorization`` is its Proxy-Authorization value and
    ``secrets`` every form of its credentials a :class:`Redactor` removes."""

    origin: Origin
    authorization: bytes | None = field(default=None, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def display(self) -> str:
        """The proxy's address, without credentials."""
        return f"{self.origin.scheme}://{self.origin.authority}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ConfigurationError("a proxy must be an http:// URL")
        origin = Origin.of(url)
        authorization = None
        secrets: tuple[str, ...] = ()
        if parts.username is not None:
            password = unquote(parts.password or "")
            credentials = f"{unquote(parts.username)}:{password}"
            encoded = base64.b64encode(credentials.encode())
            authorization = b"Basic " + encoded
            # The username alone is not a secret; user:password, the password
            # (as written in the URL and decoded) and the base64 form are.
            secrets = (credentials, password, parts.password or "", encoded.decode())
        return cls(origin, authorization, secrets)


def proxy_for(origin: Origin, proxy: str | None, *, trust_env: bool) -> Proxy | None:
    """The proxy to reach ``origin`` through: ``proxy`` if given, else (with
    ``trust_env``) the environment's for its scheme (``ALL_PROXY`` for any),
    unless ``NO_PROXY`` names the host."""
    if proxy is not None:
        return Proxy.parse(proxy)
    if not trust_env:
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(origin.scheme) or proxies.get("all")
    if not url:
        return None
    # The stdlib's NO_PROXY matching (hosts, domain suffixes, ports, "*");
    # typeshed does not list it, though it is public on every platform.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(origin.host, proxies):
        return None
    return Proxy.parse(url)


# -- redaction ---------------------------------------------------------------------------

REDACTED = "[redacted]"
"""What stands in a message where a credential (or a piece of one) was."""

# Any run of this many characters of a secret is redacted where it appears
# (see docs/design.md, "Redaction (issue 21)").
REDACT_FRAGMENT = 8
# Secrets shorter than REDACT_FRAGMENT are redacted where they appear whole,
# if they are at least this long (shorter ones would blank out ordinary words
# and carry next to nothing).
REDACT_MIN_WHOLE = 4
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _forms(secret: str) -> set[str]:
    """The ways an upstream may write ``secret`` back: as sent, JSON-escaped
    (with or without ``\\/``) and percent-encoded."""
    escaped = orjson.dumps(secret).decode()[1:-1]
    return {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        quote(secret, safe=""),
        quote(secret),
    }


class Redactor:
    """Removes the credentials a client sends from text derived from an
    answer (an error's message or body excerpt) before it is kept in an
    exception or logged.

    The rule: every run of :data:`REDACT_FRAGMENT` or more characters that is
    also a run of one of the secrets (or of a JSON-escaped or percent-encoded
    form of one), matched without regard to ASCII case, becomes
    :data:`REDACTED`; a secret shorter than that is redacted where it appears
    whole (from :data:`REDACT_MIN_WHOLE` characters). A text cut to ``limit``
    characters is redacted before the cut is made, looking past it, so a
    secret straddling the cut leaves no piece of itself either.
    """

    def __init__(self, *secrets: str | bytes | None) -> None:
        self._known: set[str] = set()
        self._windows: set[str] = set()
        self._whole: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | bytes | None) -> None:
        """Redact these too (``None`` and empty secrets are skipped)."""
        for secret in secrets:
            if not secret:
                continue
            if isinstance(secret, bytes):
                secret = secret.decode("latin-1")
            for form in _forms(secret):
                folded = form.translate(_ASCII_LOWER)
                if folded in self._known:
                    continue
                self._known.add(folded)
                if len(folded) >= REDACT_FRAGMENT:
                    self._windows.update(
                        folded[i : i + REDACT_FRAGMENT]
                        for i in range(len(folded) - REDACT_FRAGMENT + 1)
                    )
                elif len(folded) >= REDACT_MIN_WHOLE:
                    self._whole.append(folded)

    def __bool__(self) -> bool:
        return bool(self._windows or self._whole)

    def _spans(self, folded: str) -> list[tuple[int, int]]:
        """The merged ranges of ``folded`` to redact."""
        spans: list[tuple[int, int]] = []
        size = REDACT_FRAGMENT
        windows = self._windows
        if windows:
            for i in range(len(folded) - size + 1):
                if folded[i : i + size] in windows:
                    spans.append((i, i + size))
        for whole in self._whole:
            start = folded.find(whole)
            while start >= 0:
                spans.append((start, start + len(whole)))
                start = folded.find(whole, start + 1)
        spans.sort()
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged

    def __call__(self, text: str, limit: int | None = None) -> str:
        """``text`` (its first ``limit`` characters) with the secrets redacted."""
        if limit is not None and len(text) > limit:
            # Look past the cut: a secret that straddles it is found whole.
            text = text[: limit + REDACT_FRAGMENT]
        else:
            limit = len(text)
        if not self:
            return text[:limit]
        parts: list[str] = []
        done = 0
        for start, end in self._spans(text.translate(_ASCII_LOWER)):
            if start >= limit:
                break
            parts += (text[done:start], REDACTED)
            done = end
        if done < limit:
            parts.append(text[done:limit])
        return "".join(parts)
