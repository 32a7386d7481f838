"""How to reach an endpoint: its origin, which TLS certificates to trust, and
which proxy (if any) to go through, set up as httpx does it."""

from __future__ import annotations

import base64
import os
import ssl
import urllib.request
from dataclasses import dataclass, field
from typing import NamedTuple, Union
from urllib.parse import unquote, urlsplit

from resumable_fast.errors import ConfigurationError

__all__ = ["Origin", "Proxy", "Verify", "make_ssl_context", "proxy_for"]

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
    """An HTTP proxy; ``authorization`` is its Proxy-Authorization value."""

    origin: Origin
    authorization: bytes | None = field(default=None, repr=False)

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
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(credentials.encode())
        return cls(origin, authorization)


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
