"""Turn an OpenAI ``image_url.url`` string into decoded RGB pixels, safely, in the router process.

Workers only ever receive ``ImageData`` (raw pixels), so no request string can make a worker open a
file or a URL. Two sources are accepted:

* ``data:image/<png|jpeg|jpg|webp|gif>;base64,...`` — strict base64, size-capped before decoding.
* ``http://`` / ``https://`` URLs (unless ``ImagePolicy.allow_urls`` is off), fetched with SSRF guards:
  the host is resolved once, every resolved address must be public (or explicitly allowlisted), the
  connection goes to the checked address (no second DNS lookup, so no rebinding window) with the
  original ``Host`` header and, for https, the original name for SNI and certificate verification;
  redirects are followed by hand and every hop is checked like the first; the body is streamed with a
  byte cap and the whole download has a deadline.

Decoding uses Pillow restricted to PNG/JPEG/WEBP/GIF; the pixel count is checked from the header
before any pixel data is decoded (decompression bombs), tiny images are refused, and the result is
EXIF-rotated, converted to RGB and shrunk so that its longest side fits ``max_dimension``.

Every refusal is an ``ApiError(400, ..., param=param, code="invalid_image_url" | "invalid_image")``;
messages never echo resolved addresses or other internal details.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import struct
import warnings
from dataclasses import dataclass
from io import BytesIO

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from mlx_fleet.protocol import ImageData
from mlx_fleet.router.http.errors import ApiError

__all__ = ["ImagePolicy", "load_image"]

BAD_URL = "invalid_image_url"
BAD_IMAGE = "invalid_image"

_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_DATA_MIME = {"image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif"}
_REDIRECTS = {301, 302, 303, 307, 308}
_BLOCKED_NAMES = {"localhost", "localhost.localdomain", "metadata.google.internal", "metadata"}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ImagePolicy:
    max_dimension: int = 2048          # resize (keep aspect) so that max(w, h) <= this
    max_pixels: int = 40_000_000       # refuse larger, checked from the header before decoding
    min_dimension: int = 2             # refuse e.g. 1x1 images (vLLM CVE-2026-22773)
    max_bytes: int = 20 * 1024 * 1024  # for data URIs and downloads
    timeout: float = 10.0              # whole download (resolution, connection, redirects, body)
    max_redirects: int = 3
    allow_urls: bool = True            # http(s) URLs at all
    # Host names or CIDR networks that may be private, e.g. "127.0.0.1", "10.0.0.0/8", "images.internal".
    allowed_hosts: tuple[str, ...] = ()


async def load_image(url: str, param: str, policy: ImagePolicy, *,
                     client: httpx.AsyncClient | None = None) -> ImageData:
    """Fetch/decode ``url`` (an OpenAI ``image_url.url``) into RGB pixels, or raise ``ApiError(400)``.

    ``client``, if given, is used for downloads instead of a fresh one; it should not follow redirects
    on its own (requests here pass ``follow_redirects=False`` anyway), should have ``trust_env=False``
    and no cookies/auth of its own.
    """
    if not isinstance(url, str) or not url:
        raise ApiError(400, "Image URL must be a non-empty string.", param=param, code=BAD_URL)
    scheme = url.split(":", 1)[0].strip().lower() if ":" in url else ""
    if scheme == "data":
        data = _decode_data_uri(url, param, policy)
    elif scheme in ("http", "https"):
        if not policy.allow_urls:
            raise ApiError(400, "Image URLs are disabled on this server; send the image as a base64 data URI "
                                "(data:image/png;base64,...).", param=param, code=BAD_URL)
        data = await _download(url, param, policy, client)
    else:
        raise ApiError(400, "Invalid image URL: expected an http(s) URL or a base64 data URI "
                            "(data:image/png;base64,...).", param=param, code=BAD_URL)
    return await _decode_image(data, param, policy)


# -- data URIs --------------------------------------------------------------------------------

def _decode_data_uri(url: str, param: str, policy: ImagePolicy) -> bytes:
    header, sep, payload = url.partition(",")
    parts = [p.strip().lower() for p in header[len("data:"):].split(";")]
    if not sep or len(parts) < 2 or parts[-1] != "base64" or parts[0] not in _DATA_MIME:
        raise ApiError(400, "Invalid image data URI: expected data:image/<png|jpeg|webp|gif>;base64,<data>.",
                       param=param, code=BAD_URL)
    # Refuse on the encoded length first, so an enormous string is never decoded.
    if len(payload) > (policy.max_bytes + 2) // 3 * 4 + 4:
        raise _too_big(param, policy)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "Invalid image data URI: the data is not valid base64.", param=param,
                       code=BAD_URL) from None
    if len(data) > policy.max_bytes:
        raise _too_big(param, policy)
    if not data:
        raise ApiError(400, "Invalid image data URI: the image data is empty.", param=param, code=BAD_IMAGE)
    return data


def _too_big(param: str, policy: ImagePolicy) -> ApiError:
    limit = policy.max_bytes / _MIB
    text = f"{limit:g} MiB" if limit >= 1 else f"{policy.max_bytes} bytes"
    return ApiError(400, f"Image exceeds {text}.", param=param, code=BAD_URL)


# -- downloads --------------------------------------------------------------------------------

async def _download(url: str, param: str, policy: ImagePolicy, client: httpx.AsyncClient | None) -> bytes:
    own = client is None
    if own:
        client = httpx.AsyncClient(
            trust_env=False, follow_redirects=False, http2=False,
            timeout=httpx.Timeout(policy.timeout, connect=min(5.0, policy.timeout)),
            # No pooling: a connection made with one name's SNI is never reused for another name.
            limits=httpx.Limits(max_keepalive_connections=0, max_connections=4))
    try:
        return await asyncio.wait_for(_fetch(url, param, policy, client), timeout=policy.timeout)
    except (asyncio.TimeoutError, httpx.TimeoutException):
        raise ApiError(400, "Timed out downloading image.", param=param, code=BAD_URL) from None
    finally:
        if own:
            await client.aclose()


async def _fetch(url: str, param: str, policy: ImagePolicy, client: httpx.AsyncClient) -> bytes:
    current = _parse_url(url, param, hop=0)
    for hop in range(policy.max_redirects + 1):
        addresses = await _checked_addresses(current, param, policy, hop)
        response = await _open(client, current, addresses, param)
        try:
            if response.status_code in _REDIRECTS:
                location = response.headers.get("location")
                if not location:
                    raise ApiError(400, f"Image URL returned a redirect ({response.status_code}) without a "
                                        "Location.", param=param, code=BAD_URL)
                try:
                    target = current.join(location.strip())
                except (httpx.InvalidURL, ValueError):
                    raise ApiError(400, "Image URL redirects to an invalid URL.", param=param,
                                   code=BAD_URL) from None
                current = _parse_url(str(target), param, hop=hop + 1)
                continue
            return await _read_body(response, param, policy)
        finally:
            await response.aclose()
    raise ApiError(400, f"Image URL redirected more than {policy.max_redirects} times.", param=param,
                   code=BAD_URL)


def _parse_url(url: str, param: str, *, hop: int) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise ApiError(400, "Image URL redirects to an invalid URL." if hop else "Invalid image URL.",
                       param=param, code=BAD_URL) from None
    if parsed.scheme not in ("http", "https"):
        raise ApiError(400, "Image URL redirects to a URL that is not http(s)." if hop else
                       "Invalid image URL: only http, https and base64 data URIs are supported.",
                       param=param, code=BAD_URL)
    if not parsed.raw_host:
        raise ApiError(400, "Image URL redirects to a URL without a host." if hop else
                       "Invalid image URL: no host.", param=param, code=BAD_URL)
    return parsed


def _host_name(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii").lower().rstrip(".")


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def _checked_addresses(url: httpx.URL, param: str, policy: ImagePolicy, hop: int) -> list[str]:
    """Resolve the host once; every address must pass, or the host/address must be allowlisted."""
    host = _host_name(url)
    names, networks = _allowlist(policy.allowed_hosts)
    name_allowed = host in names
    refused = ApiError(400, "Image URL redirects to a non-public address." if hop else
                       "Image URL host resolves to a non-public address.", param=param, code=BAD_URL)
    if not name_allowed and (host in _BLOCKED_NAMES or host.endswith(".localhost")):
        raise refused
    try:
        literal = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await _resolve(host, _port(url))
        except (OSError, UnicodeError):
            raise ApiError(400, "Could not resolve the image URL host.", param=param, code=BAD_URL) from None
        addresses = []
        for *_, sockaddr in infos:
            try:
                address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            except ValueError:
                raise refused from None
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ApiError(400, "Could not resolve the image URL host.", param=param, code=BAD_URL)
    for address in addresses:
        if not (name_allowed or _is_public(address) or any(_in(address, net) for net in networks)):
            raise refused
    return [str(a) for a in addresses]


async def _resolve(host: str, port: int) -> list:
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def _allowlist(entries: tuple[str, ...]) -> tuple[set[str], list]:
    names: set[str] = set()
    networks = []
    for entry in entries:
        entry = entry.strip().lower().rstrip(".")
        try:
            network = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            names.add(entry)
            continue
        if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
            network = ipaddress.ip_network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
        networks.append(network)
    return names, networks


def _in(address, network) -> bool:
    if address.version != network.version and address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def _is_public(address) -> bool:
    embedded = []
    if address.version == 6:
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.append(address.teredo[1])
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.is_site_local:
            return False
    if any(not _is_public(e) for e in embedded):
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        return True  # judged entirely by the embedded IPv4 address above
    return (address.is_global and not address.is_multicast and not address.is_reserved
            and not address.is_loopback and not address.is_link_local and not address.is_private
            and not address.is_unspecified and not (address.version == 4 and address in _CGNAT))


async def _open(client: httpx.AsyncClient, url: httpx.URL, addresses: list[str], param: str) -> httpx.Response:
    """GET ``url`` from one of its already-checked addresses, without resolving the name again."""
    host = _host_name(url)
    headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*", "Accept-Encoding": "identity",
               "User-Agent": "mlx-fleet-image-fetch"}
    extensions = {}
    is_literal = True
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        is_literal = False
    if url.scheme == "https" and not is_literal:
        extensions["sni_hostname"] = url.raw_host.decode("ascii").rstrip(".")  # SNI + cert name check
    for index, address in enumerate(addresses):
        pinned = httpx.URL(scheme=url.scheme, host=address, port=_port(url), raw_path=url.raw_path)
        request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            return await client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            raise
        except httpx.ConnectError:
            if index + 1 < len(addresses):
                continue
            raise ApiError(400, "Could not connect to the image URL host.", param=param, code=BAD_URL) from None
        except httpx.HTTPError:
            raise ApiError(400, "Could not download the image.", param=param, code=BAD_URL) from None
    raise ApiError(400, "Could not connect to the image URL host.", param=param, code=BAD_URL)


async def _read_body(response: httpx.Response, param: str, policy: ImagePolicy) -> bytes:
    status = response.status_code
    if not 200 <= status < 300:
        raise ApiError(400, f"Image URL returned HTTP status {status}.", param=param, code=BAD_URL)
    content_type = response.headers.get("content-type", "").strip().lower()
    if not content_type.startswith("image/"):
        shown = content_type.split(";", 1)[0][:64] or "none"
        raise ApiError(400, f"Image URL did not return an image (Content-Type: {shown}).", param=param,
                       code=BAD_URL)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ApiError(400, "Image URL returned a compressed (Content-Encoding) body; only plain image "
                            "bytes are accepted.", param=param, code=BAD_URL)
    length = response.headers.get("content-length")
    if length is not None and length.strip().isdigit() and int(length) > policy.max_bytes:
        raise _too_big(param, policy)
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in response.aiter_bytes():  # identity only (checked above): raw == decoded
            total += len(chunk)
            if total > policy.max_bytes:
                raise _too_big(param, policy)
            chunks.append(chunk)
    except httpx.TimeoutException:
        raise
    except httpx.HTTPError:
        raise ApiError(400, "Could not download the image.", param=param, code=BAD_URL) from None
    if not total:
        raise ApiError(400, "Image URL returned an empty body.", param=param, code=BAD_IMAGE)
    return b"".join(chunks)


# -- decoding ---------------------------------------------------------------------------------

_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


async def _decode_image(data: bytes, param: str, policy: ImagePolicy) -> ImageData:
    # Header only (cheap, no await inside): run it here so the warnings filter is not raced by threads.
    image = _open_header(data, param, policy)
    return await asyncio.to_thread(_decode_pixels, image, param, policy)


def _open_header(data: bytes, param: str, policy: ImagePolicy) -> Image.Image:
    def too_many(pixels: int | str) -> ApiError:
        return ApiError(400, f"Image has {pixels} pixels; the limit is {policy.max_pixels}.", param=param,
                        code=BAD_IMAGE)

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(BytesIO(data), formats=_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = _BOMB_SIZE.search(str(exc))
            raise too_many(found.group(1) if found else f"more than {policy.max_pixels}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError,
                TypeError, IndexError, KeyError, struct.error):
            raise ApiError(400, "Could not decode the image; supported formats are PNG, JPEG, WEBP and GIF.",
                           param=param, code=BAD_IMAGE) from None
    width, height = image.size
    if width * height > policy.max_pixels:
        image.close()
        raise too_many(width * height)
    if min(width, height) < policy.min_dimension:
        image.close()
        raise ApiError(400, f"Image is {width}x{height}; each side must be at least {policy.min_dimension} "
                            "pixels.", param=param, code=BAD_IMAGE)
    return image


def _decode_pixels(image: Image.Image, param: str, policy: ImagePolicy) -> ImageData:
    box = (policy.max_dimension, policy.max_dimension)
    try:
        with image:
            image.draft("RGB", box)  # JPEG only: decode at a reduced scale when the image is much larger
            image.load()
            upright = ImageOps.exif_transpose(image) or image
            rgb = upright.convert("RGB")
            rgb.thumbnail(box, Image.Resampling.LANCZOS)
            width, height = rgb.size
            pixels = rgb.tobytes()
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, struct.error,
            Image.DecompressionBombError):
        raise ApiError(400, "Could not decode the image (corrupt or truncated data).", param=param,
                       code=BAD_IMAGE) from None
    except MemoryError:
        raise ApiError(400, "Image is too large to decode.", param=param, code=BAD_IMAGE) from None
    if min(width, height) < policy.min_dimension:
        raise ApiError(400, f"Image aspect ratio is too extreme: it would be {width}x{height} after resizing "
                            f"to at most {policy.max_dimension} pixels per side.", param=param, code=BAD_IMAGE)
    return ImageData(width=width, height=height, rgb=pixels)
