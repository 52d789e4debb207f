"""The ``image`` and ``mask`` tool parameters: one string, three kinds of value.

- ``imagegate://images/{id}``: one of the caller's own results (another user's id is "not found");
- an ``https`` URL: fetched with every hop checked against private and local addresses;
- base64 data, bare or as a ``data:`` URI, capped in size.

Whatever arrives is checked by its header (``ImageService.load_input``) and decoded in full by
the job before a provider sees it.

The URL fetch resolves the host itself, refuses the request unless every address is public,
then connects to exactly those checked addresses (the TLS certificate is still verified for the
host name), so DNS rebinding between the check and the connection is impossible. Redirects are
followed by hand, each hop checked again. No proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from core import (
    Caller,
    ImageService,
    InputImage,
    InvalidRequestError,
    image_reference,
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
TransportFactory = Callable[[dict[str, list[str]]], httpx.AsyncBaseTransport]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]{0,15}):")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_REDIRECTS = (301, 302, 303, 307, 308)


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(ip: Address) -> bool:
    """True only for globally routable unicast addresses, looking inside IPv6 wrappers."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return is_public(ip.sixtofour)
        if ip in _NAT64:
            return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _IPV4_COMPATIBLE or ip.is_site_local:
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)


def literal_ip(host: str) -> Address | None:
    """``host`` as an IP address, including the legacy IPv4 spellings that resolvers accept
    (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``); None for a host name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", text) and re.search(r"\d", text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses checked beforehand, never resolving a name again."""

    def __init__(self, pins: dict[str, list[str]]) -> None:
        self._pins = {host.lower(): ips for host, ips in pins.items()}
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        ips = self._pins.get(host.lower().strip("[]"))
        if not ips:
            raise httpcore.ConnectError(f"{host} was not checked before connecting")
        error: Exception | None = None
        for ip in ips:
            try:
                return await self._inner.connect_tcp(
                    ip,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose connections go only to the pinned addresses of each host."""

    def __init__(self, pins: dict[str, list[str]], *, ssl_context: ssl.SSLContext | None = None):
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            network_backend=_PinnedBackend(pins),
        )


class UrlFetcher:
    """Downloads an image from an https URL without reaching private or local addresses.

    ``resolver`` and ``transport_factory`` are injectable so tests need neither DNS nor network.
    """

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        transport_factory: TransportFactory = PinnedTransport,
        timeout_s: float = 30.0,
        max_redirects: int = 5,
    ) -> None:
        self.resolver = resolver
        self.transport_factory = transport_factory
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects

    async def fetch(self, url: str, *, max_bytes: int) -> bytes:
        """The body of ``url``, following up to ``max_redirects`` checked redirects.

        Raises:
            InvalidRequestError: not https, a private or local address (on any hop), too large,
                not found, or the download failed.
        """
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url, max_bytes)
        except TimeoutError:
            raise InvalidRequestError(
                f"downloading the image took longer than {self.timeout_s:.0f} s; "
                "send it as base64 instead"
            ) from None

    async def _fetch(self, url: str, max_bytes: int) -> bytes:
        target = _parse_url(url)
        for _ in range(self.max_redirects + 1):
            ips = await self.check_host(target.host, target.port or 443)
            transport = self.transport_factory({target.host: ips})
            async with httpx.AsyncClient(
                transport=transport,
                trust_env=False,
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout_s, connect=10.0),
            ) as client:
                try:
                    async with client.stream(
                        "GET", target, headers={"Accept": "image/*"}
                    ) as response:
                        if response.status_code in _REDIRECTS:
                            location = response.headers.get("location")
                            if not location:
                                raise _download_error(target, "a redirect without a Location")
                            target = _parse_url(str(target.join(location)))
                            continue
                        if response.status_code != 200:
                            raise _download_error(target, f"HTTP {response.status_code}")
                        return await _read_capped(response, max_bytes)
                except httpx.HTTPError as exc:
                    raise _download_error(target, type(exc).__name__) from None
        raise InvalidRequestError(f"the image URL redirected more than {self.max_redirects} times")

    async def check_host(self, host: str, port: int) -> list[str]:
        """The addresses of ``host``, all of them public.

        Raises:
            InvalidRequestError: the host is or resolves to a private, local or reserved address.
        """
        literal = literal_ip(host)
        if literal is not None:
            ips = [literal]
        else:
            try:
                ips = [
                    ipaddress.ip_address(a.split("%")[0]) for a in await self.resolver(host, port)
                ]
            except (OSError, ValueError):
                raise InvalidRequestError(f"cannot resolve the image URL's host {host!r}") from None
            if not ips:
                raise InvalidRequestError(f"cannot resolve the image URL's host {host!r}")
        for ip in ips:
            if not is_public(ip):
                raise InvalidRequestError(
                    f"the image URL's host {host!r} is a private, local or reserved address;"
                    " use a public https URL, base64 data or an imagegate://images/ URI"
                )
        return [str(ip) for ip in ips]


async def resolve_image(
    service: ImageService, caller: Caller, value: str, fetcher: UrlFetcher, *, what: str = "image"
) -> InputImage:
    """Turn an ``image``/``mask`` parameter into a checked ``InputImage``.

    Raises:
        InvalidRequestError: unusable value (wrong scheme, private URL, too large, not an image).
        NotFoundError: an imagegate URI that is not one of the caller's images.
    """
    value = value.strip()
    max_bytes = service.max_input_bytes("mcp")
    image_id = image_reference(value)
    if image_id is not None:
        return await service.input_from_image(caller, image_id)
    scheme = _SCHEME.match(value)
    if scheme is None:
        data = decode_base64(value, max_bytes=max_bytes, what=what)
    elif scheme[1].lower() == "data":
        data = decode_data_uri(value, max_bytes=max_bytes, what=what)
    elif scheme[1].lower() == "https":
        data = await fetcher.fetch(value, max_bytes=max_bytes)
    else:
        raise InvalidRequestError(
            f"the {what} must be an imagegate://images/ URI, an https URL or base64 data,"
            f" not a {scheme[1].lower()}: URL"
        )
    return await service.load_input(data, what=what, max_bytes=max_bytes, caller=caller)


def decode_data_uri(value: str, *, max_bytes: int, what: str = "image") -> bytes:
    """The bytes of a ``data:<mime>;base64,<data>`` URI.

    Raises:
        InvalidRequestError: not base64, malformed, or larger than ``max_bytes``.
    """
    header, sep, payload = value.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise InvalidRequestError(
            f"the {what} data URI must be base64, like data:image/png;base64,iVBOR..."
        )
    return decode_base64(payload, max_bytes=max_bytes, what=what)


def decode_base64(value: str, *, max_bytes: int, what: str = "image") -> bytes:
    """Decode standard or URL-safe base64, refusing anything over ``max_bytes`` before decoding.

    Raises:
        InvalidRequestError: not base64, or too large.
    """
    text = re.sub(r"\s+", "", value)
    if not text:
        raise InvalidRequestError(f"the {what} is empty")
    if len(text) > (max_bytes + 2) // 3 * 4:
        raise InvalidRequestError(
            f"the {what} is over the {max_bytes / 1e6:.0f} MB limit; send a smaller image"
        )
    text += "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"the {what} is neither an imagegate://images/ URI, an https URL nor valid base64"
        ) from None


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise InvalidRequestError("the image URL is not a valid URL") from None
    if parsed.scheme != "https":
        raise InvalidRequestError(f"image URLs must use https, not {parsed.scheme or 'no'} scheme")
    if not parsed.host:
        raise InvalidRequestError("the image URL has no host")
    if parsed.userinfo:
        raise InvalidRequestError("the image URL must not contain a user name or password")
    return parsed


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise InvalidRequestError(
            f"the image at that URL is {int(declared) / 1e6:.1f} MB;"
            f" the limit is {max_bytes / 1e6:.0f} MB"
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise InvalidRequestError(
                f"the image at that URL is over the {max_bytes / 1e6:.0f} MB limit"
            )
    return bytes(body)


def _download_error(url: httpx.URL, reason: str) -> InvalidRequestError:
    return InvalidRequestError(f"could not download the image from {url.host} ({reason})")
