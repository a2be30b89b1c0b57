"""Job-completion callbacks: which URLs a client may give, and how the gateway delivers and signs them.

WHY this much care: `callback_url` makes the gateway send a request to an address a client chose, from
inside the cluster, where egress to the preprocessor, Triton, the gateway itself and cloud metadata
endpoints is open. So (a) a URL is refused unless it is https (plain http only for hosts the operator
lists), carries no userinfo, and every address its host resolves to is public (loopback, private,
link-local, shared, multicast, reserved and unspecified addresses are refused unless the operator allows
the host or network); numeric host forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``::ffff:127.0.0.1``)
are normalised with `ipaddress` before the check, exactly as the C resolver would read them. (b) Delivery
resolves the host once, checks the addresses again and connects to the checked address itself (the Host
header and the TLS SNI/certificate check keep the original name), so a DNS answer that changes between
check and connect (rebinding) cannot redirect it; redirects are never followed, proxies from the
environment are ignored, the timeout is short and retries back off. (c) Each delivery is signed:
``X-Deepfake-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` (README, "Callbacks").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from deepfake.api_errors import ApiError
from deepfake.retry import Backoff, call_with_retries_async

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Deepfake-Signature"
MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT_S = 5.0
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as strings; tests inject their own.
Resolver = Callable[[str, int], list[str]]
# Characters of a host that the C resolver (inet_aton) may read as an IPv4 address in some legacy form.
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$", re.IGNORECASE)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMBER = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$", re.IGNORECASE)


class CallbackRefused(Exception):
    """A callback URL the policy refuses: `code` and `message` become the 422 at submission."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_api_error(self) -> ApiError:
        return ApiError(self.code, self.message)


@dataclass(frozen=True)
class CheckedCallback:
    """A URL that passed the policy, with the addresses its host resolved to (each one checked)."""

    url: httpx.URL
    host: str
    port: int
    addresses: list[str]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address inet_aton reads from `host` (``2130706433``, ``0x7f.1``, ``0177.0.0.01``), or None
    when `host` is not such a numeric form."""
    if not _NUMERIC_HOST.match(host):
        return None
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]  # a trailing dot, as in "127.0.0.1."
    if not 1 <= len(parts) <= 4 or not all(_NUMBER.match(part) for part in parts):
        return None
    values = []
    for part in parts:
        if part.lower().startswith("0x"):
            values.append(int(part[2:] or "0", 16))
        elif part.startswith("0") and len(part) > 1:
            values.append(int(part, 8))
        else:
            values.append(int(part))
    # a.b.c.d: one byte each; a.b.c: c is 16 bits; a.b: b is 24 bits; a: 32 bits.
    *head, last = values
    if any(value > 255 for value in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for index, value in enumerate(head):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def parse_address(text: str) -> IPAddress | None:
    """`text` as an IP address (any numeric form, zone id dropped, IPv4-mapped IPv6 unwrapped), or None."""
    text = text.strip().strip("[]")
    address: IPAddress | None
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        address = legacy_ipv4(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d on the wire
    return address


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 (2002::/16) or NAT64 (64:ff9b::/96) address reaches."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why `address` is not a public destination ("a loopback address", ...), or None when it is."""
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, problem in checks:
        if getattr(address, attribute):
            return problem
    embedded = _embedded_ipv4(address)
    if embedded is not None and (embedded_problem := address_problem(embedded)) is not None:
        return embedded_problem
    if embedded is None and not address.is_global:  # e.g. 100.64.0.0/10 (carrier NAT), documentation
        return "a non-public address"
    return None


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    address = parse_address(host)
    return str(address) if address is not None else host


@dataclass
class CallbackPolicy:
    """Which callback URLs are accepted. `http_hosts`: hosts plain http may go to; `allowed_hosts` and
    `allowed_networks`: hosts/networks that may be non-public (an operator's internal receiver)."""

    http_hosts: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = system_resolver
    resolve_timeout_s: float = RESOLVE_TIMEOUT_S

    @classmethod
    def from_settings(cls, http_hosts: str, allowed: str, resolver: Resolver | None = None) -> CallbackPolicy:
        """`allowed` is comma-separated host names, IP addresses and CIDR networks."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for item in _split_list(allowed):
            if "/" in item:
                networks.append(ipaddress.ip_network(item, strict=False))
            elif (address := parse_address(item)) is not None:
                networks.append(ipaddress.ip_network(address))
            else:
                hosts.add(_normal_host(item))
        return cls(
            http_hosts=frozenset(_normal_host(host) for host in _split_list(http_hosts)),
            allowed_hosts=frozenset(hosts),
            allowed_networks=tuple(networks),
            resolver=resolver or system_resolver,
        )

    def parse(self, url: str) -> tuple[httpx.URL, str, int]:
        """The URL, its normalised host and port; CallbackRefused for anything but a plain absolute
        https URL (or http to a listed host) without userinfo. Nothing is resolved or contacted."""
        if len(url) > MAX_URL_LENGTH:
            raise CallbackRefused("invalid_callback_url", f"callback_url is longer than {MAX_URL_LENGTH}")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            raise CallbackRefused("invalid_callback_url", f"callback_url is not a valid URL: {exc}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CallbackRefused("invalid_callback_url", "callback_url must be an absolute https URL")
        if parsed.userinfo or "@" in re.split(r"[/?#]", url.split("//", 1)[-1], maxsplit=1)[0]:
            raise CallbackRefused(
                "callback_url_forbidden", "callback_url must not contain a user name or password"
            )
        host = _normal_host(parsed.raw_host.decode("ascii"))
        if not host:
            raise CallbackRefused("invalid_callback_url", "callback_url has no host")
        if parsed.scheme == "http" and host not in self.http_hosts:
            raise CallbackRefused(
                "callback_url_forbidden", "callback_url must use https (plain http is not accepted)"
            )
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return parsed, host, port

    def _allowed(self, host: str, address: IPAddress) -> bool:
        return host in self.allowed_hosts or any(
            address.version == network.version and address in network for network in self.allowed_networks
        )

    def check_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses, normalised, if every one is a permitted destination; else CallbackRefused."""
        checked: list[str] = []
        for text in addresses:
            address = parse_address(text)
            if address is None:
                raise CallbackRefused("callback_url_forbidden", f"callback_url host {host!r} is not usable")
            problem = address_problem(address)
            if (
                address.is_unspecified
                or address.is_multicast
                or (problem and not self._allowed(host, address))
            ):
                raise CallbackRefused(
                    "callback_url_forbidden",
                    f"callback_url host {host!r} is or resolves to {problem}; callbacks go to public "
                    "hosts only",
                )
            checked.append(str(address))
        if not checked:
            raise CallbackRefused("callback_url_unresolvable", f"callback_url host {host!r} has no address")
        return checked

    def check(self, url: str) -> CheckedCallback:
        """Parse, resolve once, check every address. Blocking (DNS); see `check_async`."""
        parsed, host, port = self.parse(url)
        literal = parse_address(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise CallbackRefused(
                    "callback_url_unresolvable", f"callback_url host {host!r} does not resolve"
                ) from exc
        return CheckedCallback(parsed, host, port, self.check_addresses(host, addresses))

    async def check_async(self, url: str) -> CheckedCallback:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.check, url), self.resolve_timeout_s)
        except TimeoutError as exc:
            raise CallbackRefused(
                "callback_url_unresolvable", "callback_url host did not resolve in time"
            ) from exc


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The X-Deepfake-Signature value: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the v1 HMAC matches and the timestamp is within `tolerance_s` of now."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


@dataclass
class CallbackSender:
    """Delivers one signed POST to a checked address; `transport` lets tests see the requests."""

    policy: CallbackPolicy
    timeout_s: float
    attempts: int
    backoff_s: float = 1.0
    transport: httpx.AsyncBaseTransport | None = None
    _client: httpx.AsyncClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self.timeout_s,
            follow_redirects=False,
            trust_env=False,  # an HTTP(S)_PROXY would resolve the name itself, after our check
            # No connection reuse: a pooled connection is keyed by IP, and must never serve another name.
            limits=httpx.Limits(max_keepalive_connections=0),
            transport=self.transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def deliver(self, url: str, payload: dict[str, Any], secret: str, job_id: str) -> str:
        """POST `payload` to `url`: 'delivered', 'rejected' (a 3xx/4xx answer), 'refused' (the policy
        says no, now) or 'failed' (no answer or 5xx after every attempt)."""
        try:
            checked = await self.policy.check_async(url)
        except CallbackRefused as exc:
            log.warning("job %s: callback refused at delivery: %s", job_id, exc.message)
            return "refused"
        body = json.dumps(payload, separators=(",", ":")).encode()
        host_header = checked.url.netloc.decode("ascii")

        async def post(attempt: int) -> str:
            address = checked.addresses[attempt % len(checked.addresses)]
            target = checked.url.copy_with(host=address)
            extensions = {"sni_hostname": checked.host} if checked.url.scheme == "https" else {}
            headers = {
                "Host": host_header,
                "Content-Type": "application/json",
                "User-Agent": "deepfake-gateway-callback/1",
                SIGNATURE_HEADER: sign(secret, body),
            }
            request = self._client.build_request(
                "POST", target, content=body, headers=headers, extensions=extensions
            )
            response = await self._client.send(request, stream=True)  # the body is never read
            await response.aclose()
            if response.status_code >= 500:
                raise _ServerError(response.status_code)
            return "delivered" if response.is_success else "rejected"

        def log_failure(exc: Exception, _: int) -> None:
            log.warning("job %s: callback to %s failed: %s", job_id, checked.host, exc)

        try:
            return await call_with_retries_async(
                post,
                attempts=self.attempts,
                backoff=Backoff(self.backoff_s, max_s=30.0),
                retry_on=_worth_retrying,
                on_retry=log_failure,
            )
        except (httpx.HTTPError, _ServerError) as exc:
            log_failure(exc, self.attempts)
            return "failed"


class _ServerError(Exception):
    """A callback receiver answered 5xx: worth another attempt."""

    def __init__(self, status: int) -> None:
        super().__init__(f"answered {status}")


def _worth_retrying(exc: Exception) -> bool:
    """No answer (any httpx transport error, by type) or a 5xx answer; a 3xx/4xx is final."""
    return isinstance(exc, httpx.HTTPError | _ServerError)
