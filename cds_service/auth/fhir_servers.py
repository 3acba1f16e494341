"""Where the service may fetch FHIR data: allowlisted base URLs, compared exactly, and FHIR id syntax.

A hook call names its `fhirServer` and may hand over an access token for it; the service then GETs up to
14 queries there. Without a list of allowed bases a trusted caller could point the service at any host it
can reach (loopback aliases such as `http://2130706433:9002` or `http://127.1`, `[::ffff:127.0.0.1]`,
`user:pw@` URLs) and read internal services with the token attached. So:

* configured bases (trust file `fhir_servers` per issuer, or `VA_CDS_FHIR_SERVERS` with auth off) are
  validated strictly at start-up: http(s) only, no user information, no query or fragment, a plain host name
  or a canonical IP address, and plain http only for loopback hosts (development);
* a request's `fhirServer` is normalised only in ways that cannot change where it points (scheme and host
  lower-cased, the default port dropped, trailing slashes dropped) and must then equal an allowed base
  exactly: scheme, host, port and base path. Anything else is refused before a single request is made.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "FHIR_ID",
    "FhirServerRefused",
    "allowed_bases",
    "check_fhir_server",
    "is_fhir_id",
    "is_loopback",
    "normalise_base",
    "parse_base",
    "under_base",
]

# FHIR R4 §2.13 id datatype: 1-64 of letters, digits, '-' and '.'.
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# RFC 3986 path characters without '%': an encoded '/' or '.' could hide a segment from the comparison.
_PATH = re.compile(r"[A-Za-z0-9\-._~/!$&'()*+,;=:@]*")


def is_fhir_id(value: str) -> bool:
    """True for a FHIR logical id; "." and ".." are refused too (they would walk the URL path)."""
    return bool(FHIR_ID.fullmatch(value)) and value not in (".", "..")


class FhirServerRefused(ValueError):
    """A request's `fhirServer` may not be used: `status` 400 (not a usable base URL) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Base:
    scheme: str
    host: str  # lower case; IPv6 without brackets
    port: int
    path: str  # no trailing slash; "" for the root

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if _DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (a canonical form, as `normalise_base` returns)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_base(url: str) -> Base:
    """Parse without judging the host; raises FhirServerRefused(400) for what cannot be a base URL."""
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise FhirServerRefused(400, "fhirServer is not a usable http(s) base URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise FhirServerRefused(400, "fhirServer is not a usable http(s) base URL") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise FhirServerRefused(400, "fhirServer must be an absolute http or https URL")
    if "@" in parts.netloc:
        raise FhirServerRefused(400, "fhirServer must not contain user information (user:password@)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise FhirServerRefused(400, "fhirServer must be a base URL without query or fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise FhirServerRefused(400, "fhirServer has no host")
    path = parts.path.rstrip("/")
    return Base(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme], path)


def _canonical_host(host: str) -> bool:
    """A DNS name whose last label is not numeric, or an IP address in its canonical text form.

    Refuses the aliases resolvers accept for loopback and internal addresses: `2130706433`, `127.1`,
    `0x7f.1`, `017700000001`, IPv4-mapped IPv6 (`::ffff:127.0.0.1`).
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        return (
            len(host) <= 253
            and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()
            and not re.fullmatch(r"0x[0-9a-f]*", labels[-1])
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return False
    return str(ip) == host


def normalise_base(url: str) -> Base:
    """A configured FHIR base, validated strictly; raises ValueError naming the problem."""
    try:
        base = parse_base(url)
    except FhirServerRefused as exc:
        raise ValueError(f"{url!r}: {exc.reason.replace('fhirServer', 'a FHIR base URL')}") from None
    if not _canonical_host(base.host):
        raise ValueError(f"{url!r}: host must be a DNS name or a canonical IP address")
    if not _PATH.fullmatch(base.path) or any(seg in (".", "..") for seg in base.path.split("/")):
        raise ValueError(f"{url!r}: path must be plain (no '.', '..' or percent-encoded segments)")
    if base.scheme == "http" and not is_loopback(base.host):
        # The access token would cross the network in clear text (spec: fhirServer MUST be https).
        raise ValueError(f"{url!r}: plain http is allowed only for loopback hosts; use https")
    return base


def allowed_bases(urls: Iterable[str]) -> frozenset[str]:
    """The canonical text of each configured base; ValueError on the first bad one."""
    return frozenset(str(normalise_base(u)) for u in urls)


def check_fhir_server(url: str, allowed: frozenset[str], *, token: bool) -> Base:
    """The request's `fhirServer` as an allowed base, or FhirServerRefused saying why not."""
    base = parse_base(url)
    if str(base) not in allowed:
        shown = str(base)[:200]
        raise FhirServerRefused(403, f"fhirServer {shown} is not an allowed FHIR server for this client")
    if token and base.scheme != "https" and not is_loopback(base.host):
        raise FhirServerRefused(403, "fhirServer must be https when an access token is sent")
    return base


def under_base(url: str, base: Base) -> bool:
    """True when `url` (a `next` link) is on the same origin and inside the base path.

    Dot segments and percent-encoded '.', '/' are refused outright: a server could otherwise write a link
    that compares as inside the base but resolves outside it.
    """
    try:
        other = parse_base(url.split("?", 1)[0].split("#", 1)[0])
    except FhirServerRefused:
        return False
    path = urlsplit(url).path
    if any(seg in (".", "..") for seg in path.split("/")) or re.search(r"%2[ef]|%5c", path, re.I):
        return False
    if (other.scheme, other.host, other.port) != (base.scheme, base.host, base.port):
        return False
    return path == base.path or path.startswith(base.path + "/")
