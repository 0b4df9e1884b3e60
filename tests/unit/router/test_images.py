"""router/inputs/images.py: image_url strings → RGB pixels, with SSRF guards and decoding limits."""

from __future__ import annotations

import asyncio
import base64
import datetime
import http.server
import ipaddress
import socket
import ssl
import struct
import threading
import time
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs import images
from mlx_fleet.router.inputs.images import ImagePolicy, load_image

PARAM = "messages[0].content[1].image_url.url"
LOCAL = ImagePolicy(allowed_hosts=("127.0.0.1",))


def png_bytes(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    out = BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 7) % 256, (y * 13) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    return image.convert(mode) if mode != "RGB" else image


def load(url: str, policy: ImagePolicy = ImagePolicy(), **kw):
    return asyncio.run(load_image(url, PARAM, policy, **kw))


def refused(url: str, code: str, policy: ImagePolicy = ImagePolicy(), **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        load(url, policy, **kw)
    error = info.value
    assert (error.status, error.code, error.param) == (400, code, PARAM), error.message
    return error


PNG = png_bytes(gradient(30, 20))


# -- data URIs and decoding -------------------------------------------------------------------

def test_data_uri_png_gives_exact_rgb_pixels() -> None:
    source = gradient(30, 20)
    result = load(data_uri(png_bytes(source)))
    assert (result.width, result.height) == (30, 20)
    assert result.rgb == source.tobytes()
    assert len(result.rgb) == 30 * 20 * 3


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "LA"])
def test_other_modes_become_rgb(mode: str) -> None:
    source = gradient(16, 12, mode)
    if mode == "RGBA":
        source.putalpha(Image.linear_gradient("L").resize((16, 12)))
    result = load(data_uri(png_bytes(source)))
    assert (result.width, result.height) == (16, 12)
    assert result.rgb == Image.open(BytesIO(png_bytes(source))).convert("RGB").tobytes()


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("JPEG", "image/jpg"), ("WEBP", "image/webp"),
                                      ("GIF", "image/gif")])
def test_other_formats(fmt: str, mime: str) -> None:
    result = load(data_uri(png_bytes(gradient(24, 10), fmt), mime))
    assert (result.width, result.height, len(result.rgb)) == (24, 10, 24 * 10 * 3)


def test_large_image_is_shrunk_keeping_aspect() -> None:
    source = Image.new("RGB", (4000, 1000), (200, 10, 30))
    result = load(data_uri(png_bytes(source)))
    assert (result.width, result.height) == (2048, 512)
    assert len(result.rgb) == 2048 * 512 * 3
    assert result.rgb[:3] == bytes((200, 10, 30))


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    result = load(data_uri(png_bytes(gradient(40, 20), "JPEG", exif=exif), "image/jpeg"))
    assert (result.width, result.height) == (20, 40)


def test_undecodable_and_truncated_images() -> None:
    refused(data_uri(b"this is not an image at all"), "invalid_image")
    refused(data_uri(PNG[: len(PNG) // 2]), "invalid_image")
    # BMP is a real image format, but not one we open.
    refused(data_uri(png_bytes(gradient(8, 8), "BMP")), "invalid_image")


def test_tiny_images_are_refused() -> None:
    error = refused(data_uri(png_bytes(Image.new("RGB", (1, 1)))), "invalid_image")
    assert error.message == "Image is 1x1; each side must be at least 2 pixels."
    error = refused(data_uri(png_bytes(Image.new("RGB", (300, 1)))), "invalid_image")
    assert error.message == "Image is 300x1; each side must be at least 2 pixels."
    error = refused(data_uri(png_bytes(Image.new("RGB", (15, 40)))), "invalid_image", ImagePolicy(min_dimension=16))
    assert error.message == "Image is 15x40; each side must be at least 16 pixels."
    # A 5000x2 image would become 2048x1 after resizing: too extreme.
    refused(data_uri(png_bytes(Image.new("RGB", (5000, 2)))), "invalid_image")
    assert load(data_uri(png_bytes(Image.new("RGB", (2, 2))))).width == 2


def test_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_a, **_k):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(images, "_decode_pixels", never)
    error = refused(data_uri(png_bytes(Image.new("RGB", (100, 50)))), "invalid_image",
                    ImagePolicy(max_pixels=4000))
    assert error.message == "Image has 5000 pixels; the limit is 4000."


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a tiny (incomplete) body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_decompression_bombs_are_refused() -> None:
    # Made with Pillow: a 20000x20000 1-bit image compresses to a few tens of KB (400 MP, over 2x Pillow's limit).
    bomb = png_bytes(Image.new("1", (20000, 20000)))
    assert len(bomb) < 100_000
    error = refused(data_uri(bomb), "invalid_image")
    assert "400000000 pixels" in error.message
    # 100 MP: above Pillow's warning threshold (89 MP), below its error threshold: the warning is an error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = refused(data_uri(png_header_only(10000, 10000)), "invalid_image")
    assert "100000000 pixels" in error.message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    # 45 MP: below Pillow's own limit, above ours (40 MP).
    error = refused(data_uri(png_header_only(9000, 5000)), "invalid_image")
    assert error.message == "Image has 45000000 pixels; the limit is 40000000."


def test_bad_data_uris() -> None:
    payload = base64.b64encode(PNG).decode()
    for url in (f"data:text/plain;base64,{payload}", f"data:image/svg+xml;base64,{payload}",
                f"data:image/png,{payload}", f"data:image/png;base64{payload}", "data:,hello",
                f"data:image/bmp;base64,{payload}"):
        refused(url, "invalid_image_url")
    for bad in (payload[:-2] + "!!", payload + "=", payload.replace("A", " ", 1), "abc"):
        error = refused(f"data:image/png;base64,{bad}", "invalid_image_url")
        assert "base64" in error.message
    refused("data:image/png;base64,", "invalid_image")


def test_data_uri_size_limit() -> None:
    error = refused(data_uri(PNG), "invalid_image_url", ImagePolicy(max_bytes=len(PNG) - 1))
    assert "exceeds" in error.message
    assert load(data_uri(PNG), ImagePolicy(max_bytes=len(PNG))).width == 30
    error = refused(data_uri(b"\0" * (21 * 1024 * 1024)), "invalid_image_url")
    assert error.message == "Image exceeds 20 MiB."


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://x/y.png", "gopher://x/", "/etc/passwd",
                                 "x.png", "javascript:alert(1)", "", "http://", "https:///x.png"])
def test_unsupported_schemes_and_malformed_urls(url: str) -> None:
    refused(url, "invalid_image_url", LOCAL)


# -- SSRF: no connection is ever made to a blocked address ------------------------------------

class Recorder:
    """An httpx transport that records requests instead of sending them."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def client(self) -> httpx.AsyncClient:
        def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)
        return httpx.AsyncClient(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://127.1/x.png", "http://2130706433/x.png", "http://0x7f000001/x.png",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://[::]/x", "http://0.0.0.0/",
    "http://[::ffff:127.0.0.1]/x", "http://[::ffff:169.254.169.254]/x", "http://localhost/x",
    "http://LOCALHOST./x", "http://foo.localhost/x", "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.1/x", "http://172.16.5.4/x", "http://192.168.0.1/x", "http://100.64.0.1/x",
    "http://[fe80::1]/x", "http://[fd00::1]/x", "http://224.0.0.1/x", "https://127.0.0.1/x.png",
])
def test_private_addresses_are_refused_without_connecting(url: str) -> None:
    recorder = Recorder()
    error = refused(url, "invalid_image_url", client=recorder.client())
    assert "non-public" in error.message
    assert recorder.requests == []
    for leaked in ("127.0.0.1", "169.254", "::1"):
        if leaked not in url:
            assert leaked not in error.message


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    calls: list[str] = []

    async def resolve(host: str, port: int):
        calls.append(host)
        if host not in table:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]

    monkeypatch.setattr(images, "_resolve", resolve)
    return calls


def test_any_private_answer_refuses_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"mixed.example": ["8.8.8.8", "10.1.2.3"], "public.example": ["8.8.8.8"],
                           "v6.example": ["2606:4700::1", "::1"]})
    recorder = Recorder()
    refused("http://mixed.example/x.png", "invalid_image_url", client=recorder.client())
    refused("http://v6.example/x.png", "invalid_image_url", client=recorder.client())
    assert recorder.requests == []
    refused("http://nowhere.example/x.png", "invalid_image_url", client=recorder.client())
    # A public answer is dialled by address, with the original Host header.
    result = load("http://public.example:8080/a/b.png?q=1", client=recorder.client())
    assert result.width == 30
    (request,) = recorder.requests
    assert str(request.url) == "http://8.8.8.8:8080/a/b.png?q=1"
    assert request.headers["host"] == "public.example:8080"


def test_https_dials_the_checked_address_with_sni(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_dns(monkeypatch, {"images.example": ["93.184.216.34"]})
    recorder = Recorder()
    load("https://images.example/cat.png", client=recorder.client())
    (request,) = recorder.requests
    assert str(request.url) == "https://93.184.216.34/cat.png"
    assert request.headers["host"] == "images.example"
    assert request.extensions["sni_hostname"] == "images.example"
    assert calls == ["images.example"]


def test_urls_can_be_disabled() -> None:
    recorder = Recorder()
    error = refused("https://example.com/x.png", "invalid_image_url", ImagePolicy(allow_urls=False),
                    client=recorder.client())
    assert "disabled" in error.message
    assert recorder.requests == []
    assert load(data_uri(PNG), ImagePolicy(allow_urls=False)).width == 30


# -- a real local HTTP server -----------------------------------------------------------------

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out or refuse a certificate hang up on purpose


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def log_message(self, *_args) -> None:
        pass

    def send(self, status: int, body: bytes = b"", content_type: str = "image/png", length: bool = True,
             **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Host", "")))
        path = self.path
        if path == "/img.png":
            self.send(200, PNG)
        elif path == "/redirect":
            self.send(302, Location="/img.png")
        elif path == "/redirect-abs":
            self.send(301, Location=f"http://127.0.0.1:{self.server.server_port}/redirect")
        elif path == "/loop":
            self.send(307, Location="/loop")
        elif path == "/to-metadata":
            self.send(302, Location="http://169.254.169.254/latest/meta-data/")
        elif path == "/to-file":
            self.send(302, Location="file:///etc/passwd")
        elif path == "/html":
            self.send(200, b"<html>hi</html>", "text/html")
        elif path == "/big":
            self.send(200, b"\0" * 50_000)
        elif path == "/big-streamed":  # no Content-Length: the cap must apply while streaming
            self.send(200, b"\0" * 50_000, length=False, Connection="close")
        elif path == "/gzip":
            self.send(200, zlib.compress(PNG), **{"Content-Encoding": "deflate"})
        elif path == "/slow":
            time.sleep(1.0)
            self.send(200, PNG)
        elif path == "/drip":  # headers at once, then a body that never finishes in time
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for byte in PNG[:10]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
        else:
            self.send(404, b"not found", "text/plain")


@pytest.fixture(scope="module")
def server():
    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def seen(server) -> list[tuple[str, str]]:
    Handler.seen.clear()
    return Handler.seen


def test_loopback_server_is_refused_without_allowlist(server: str, seen) -> None:
    error = refused(f"{server}/img.png", "invalid_image_url")
    assert error.message == "Image URL host resolves to a non-public address."
    assert seen == []


def test_loopback_server_works_with_allowlist(server: str, seen) -> None:
    result = load(f"{server}/img.png", LOCAL)
    assert (result.width, result.height) == (30, 20)
    assert result.rgb == gradient(30, 20).tobytes()
    assert load(f"{server}/img.png", ImagePolicy(allowed_hosts=("127.0.0.0/8",))).width == 30
    assert load(f"{server}/img.png", ImagePolicy(allowed_hosts=("::ffff:127.0.0.1/128",))).width == 30
    assert len(seen) == 3
    refused(f"{server}/img.png", "invalid_image_url", ImagePolicy(allowed_hosts=("10.0.0.0/8", "example.com")))
    assert len(seen) == 3


def test_allowlisted_name_is_dialled_at_its_checked_address(server: str, seen,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    port = server.rsplit(":", 1)[1]
    calls = fake_dns(monkeypatch, {"images.internal": ["127.0.0.1"]})
    result = load(f"http://images.internal:{port}/redirect", ImagePolicy(allowed_hosts=("images.internal",)))
    assert result.width == 30
    # One lookup per hop, and the server saw the original name in Host both times.
    assert calls == ["images.internal", "images.internal"]
    assert seen == [("/redirect", f"images.internal:{port}"), ("/img.png", f"images.internal:{port}")]


def test_redirects_are_followed_and_checked(server: str, seen) -> None:
    assert load(f"{server}/redirect", LOCAL).width == 30
    assert load(f"{server}/redirect-abs", LOCAL).width == 30
    assert [p for p, _ in seen] == ["/redirect", "/img.png", "/redirect-abs", "/redirect", "/img.png"]
    error = refused(f"{server}/to-metadata", "invalid_image_url", LOCAL)
    assert error.message == "Image URL redirects to a non-public address."
    error = refused(f"{server}/to-file", "invalid_image_url", LOCAL)
    assert "http" in error.message
    error = refused(f"{server}/loop", "invalid_image_url", LOCAL)
    assert "redirected more than 3 times" in error.message
    # Only the redirect hop itself may count against max_redirects.
    refused(f"{server}/redirect-abs", "invalid_image_url", ImagePolicy(allowed_hosts=("127.0.0.1",),
                                                                       max_redirects=1))


def test_bad_responses(server: str, seen) -> None:
    error = refused(f"{server}/html", "invalid_image_url", LOCAL)
    assert "text/html" in error.message
    error = refused(f"{server}/missing.png", "invalid_image_url", LOCAL)
    assert "404" in error.message
    small = ImagePolicy(allowed_hosts=("127.0.0.1",), max_bytes=10_000)
    assert refused(f"{server}/big", "invalid_image_url", small).message == "Image exceeds 10000 bytes."
    assert refused(f"{server}/big-streamed", "invalid_image_url", small).message == "Image exceeds 10000 bytes."
    refused(f"{server}/gzip", "invalid_image_url", LOCAL)


def test_slow_servers_time_out(server: str) -> None:
    quick = ImagePolicy(allowed_hosts=("127.0.0.1",), timeout=0.3)
    for path in ("/slow", "/drip"):
        start = time.monotonic()
        error = refused(f"{server}{path}", "invalid_image_url", quick)
        assert error.message == "Timed out downloading image."
        assert time.monotonic() - start < 0.9


def test_connection_refused_is_a_400() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = refused(f"http://127.0.0.1:{port}/x.png", "invalid_image_url", LOCAL)
    assert str(port) not in error.message


# -- https: certificate checked against the original name while dialling the address ----------

def make_cert(tmp: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_verifies_the_original_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = make_cert(tmp_path, "images.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: sni.append(name)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        port = httpd.server_port
        fake_dns(monkeypatch, {"images.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
        trust = ssl.create_default_context(cafile=str(cert))
        Handler.seen.clear()

        async def fetch(url: str):
            async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
                return await load_image(url, PARAM, LOCAL, client=client)

        result = asyncio.run(fetch(f"https://images.test:{port}/img.png"))
        assert (result.width, result.height) == (30, 20)
        assert sni == ["images.test"]
        assert Handler.seen == [("/img.png", f"images.test:{port}")]
        # Same address, but the certificate is not for this name: refused, nothing served.
        with pytest.raises(ApiError) as info:
            asyncio.run(fetch(f"https://other.test:{port}/img.png"))
        assert info.value.code == "invalid_image_url"
        assert len(Handler.seen) == 1
        # IP-literal hosts over https are verified against the address (this cert has none): refused.
        with pytest.raises(ApiError):
            asyncio.run(fetch(f"https://127.0.0.1:{port}/img.png"))
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_embedded_and_special_addresses_are_not_public() -> None:
    assert images._is_public(ipaddress.ip_address("8.8.8.8"))
    assert images._is_public(ipaddress.ip_address("2606:4700:4700::1111"))
    for address in ("2002:7f00:1::", "64:ff9b::a00:1", "fec0::1", "198.18.0.1", "255.255.255.255"):
        assert not images._is_public(ipaddress.ip_address(address)), address
