"""Job-completion callbacks (gateway.callbacks): the URL policy against SSRF, delivery to the checked
address only, and the HMAC signature receivers verify.

Nothing here talks to anything but loopback: refusals are asserted at validation time with DNS replaced by
a fixed resolver and every TCP connect recorded (`connects`), the delivery mechanics go through
httpx.MockTransport, and the real deliveries go to receivers on 127.0.0.1 that each test allows
explicitly through the operator settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth import owner_of
from gateway.callbacks import (
    SIGNATURE_HEADER,
    CallbackPolicy,
    CallbackRefused,
    CallbackSender,
    sign,
    verify_signature,
)
from gateway.settings import GatewaySettings
from inference.onnx_backend import OnnxBackend
from preprocessor.app import create_app as create_preprocessor_app
from preprocessor.service_settings import ServiceSettings
from tests.test_gateway import KEY, assert_error_shape, post_video, wait_for_job

PUBLIC = "93.184.216.34"
SECRET = "test-callback-secret"


class FakeResolver:
    """DNS for the tests: fixed answers, and a record of every lookup."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


@pytest.fixture()
def connects(monkeypatch) -> list[object]:
    """Every IPv4/IPv6 TCP connect of this test; any to a non-loopback address is refused outright."""
    seen: list[object] = []
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock: socket.socket, address) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            seen.append(address)
            if address[0] not in ("127.0.0.1", "::1"):
                raise AssertionError(f"a test tried to connect to {address}")

    def connect(sock, address):
        guard(sock, address)
        return original_connect(sock, address)

    def connect_ex(sock, address):
        guard(sock, address)
        return original_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return seen


RESOLVER_ANSWERS = {
    "localhost": ["127.0.0.1", "::1"],
    "hooks.example.org": [PUBLIC],
    "preprocessor": ["10.96.12.7"],  # a cluster Service
    "metadata.internal": ["169.254.169.254"],
    "rebind.example.org": [PUBLIC, "127.0.0.1"],  # one bad address among good ones is enough
    "v6.example.org": ["2606:4700::1111", "fd00::5"],
    "cgnat.example.org": ["100.64.1.2"],
}

REFUSED = [
    # (url, code, whether the host is a name that must be resolved once)
    ("ftp://hooks.example.org/x", "invalid_callback_url", False),
    ("hooks.example.org/x", "invalid_callback_url", False),
    ("https:///nohost", "invalid_callback_url", False),
    ("https://hooks.example.org/" + "x" * 2000, "invalid_callback_url", False),
    ("http://hooks.example.org/hook", "callback_url_forbidden", False),  # plain http, host not listed
    ("https://user@hooks.example.org/hook", "callback_url_forbidden", False),
    ("https://user:pw@hooks.example.org/hook", "callback_url_forbidden", False),
    ("http://user@127.0.0.1/hook", "callback_url_forbidden", False),
    ("https://hooks.example.org\\@127.0.0.1/", "callback_url_forbidden", False),
    ("https://127.0.0.1/hook", "callback_url_forbidden", False),
    ("https://127.0.0.1:8081/v1/analyze", "callback_url_forbidden", False),
    ("https://127.1/", "callback_url_forbidden", False),
    ("https://2130706433/", "callback_url_forbidden", False),  # decimal 127.0.0.1
    ("https://017700000001/", "callback_url_forbidden", False),  # octal
    ("https://0x7f.0.0.1/", "callback_url_forbidden", False),  # hex
    ("https://0177.0.0.1/", "invalid_callback_url", False),  # httpx itself refuses this form
    ("https://127.0.0.1./", "callback_url_forbidden", False),
    ("https://[::1]/hook", "callback_url_forbidden", False),
    ("https://[::ffff:127.0.0.1]/", "callback_url_forbidden", False),
    ("https://[::ffff:7f00:1]/", "callback_url_forbidden", False),
    ("https://[fe80::1]/", "callback_url_forbidden", False),
    ("https://[fd00::1]/", "callback_url_forbidden", False),
    ("https://[2002:7f00:1::]/", "callback_url_forbidden", False),  # 6to4 of 127.0.0.1
    ("https://0.0.0.0/", "callback_url_forbidden", False),
    ("https://[::]/", "callback_url_forbidden", False),
    ("https://10.1.2.3/", "callback_url_forbidden", False),
    ("https://172.16.0.1/", "callback_url_forbidden", False),
    ("https://192.168.1.1/", "callback_url_forbidden", False),
    ("https://169.254.169.254/latest/meta-data/", "callback_url_forbidden", False),
    ("https://224.0.0.1/", "callback_url_forbidden", False),
    ("https://240.0.0.1/", "callback_url_forbidden", False),
    ("https://100.64.0.1/", "callback_url_forbidden", False),
    ("https://localhost/hook", "callback_url_forbidden", True),
    ("https://LOCALHOST./hook", "callback_url_forbidden", True),
    ("https://preprocessor:8081/v1/analyze", "callback_url_forbidden", True),
    ("https://metadata.internal/", "callback_url_forbidden", True),
    ("https://rebind.example.org/hook", "callback_url_forbidden", True),
    ("https://v6.example.org/hook", "callback_url_forbidden", True),
    ("https://cgnat.example.org/hook", "callback_url_forbidden", True),
    ("https://no-such-host.example.org/hook", "callback_url_unresolvable", True),
]


@pytest.mark.parametrize(("url", "code", "resolves"), REFUSED, ids=[case[0][:60] for case in REFUSED])
def test_refused_urls_are_refused_at_validation_without_any_connection(url, code, resolves, connects):
    resolver = FakeResolver(RESOLVER_ANSWERS)
    policy = CallbackPolicy(resolver=resolver)
    with pytest.raises(CallbackRefused) as refused:
        policy.check(url)
    assert refused.value.code == code, refused.value.message
    assert len(resolver.calls) == (1 if resolves else 0)  # literal addresses are never looked up
    assert connects == []


def test_public_https_urls_pass_with_the_resolved_addresses(connects):
    resolver = FakeResolver({**RESOLVER_ANSWERS, "dual.example.org": [PUBLIC, "2606:4700::1111"]})
    policy = CallbackPolicy(resolver=resolver)
    checked = policy.check("https://Hooks.Example.org./hook?job=1")
    assert (checked.host, checked.port, checked.addresses) == ("hooks.example.org", 443, [PUBLIC])
    assert policy.check("https://dual.example.org:8443/h").addresses == [PUBLIC, "2606:4700::1111"]
    assert policy.check(f"https://{PUBLIC}/h").addresses == [PUBLIC]
    assert resolver.calls == [("hooks.example.org", 443), ("dual.example.org", 8443)]
    assert connects == []


def test_operator_settings_allow_listed_hosts_and_networks_only(connects):
    resolver = FakeResolver(RESOLVER_ANSWERS)
    policy = CallbackPolicy.from_settings(
        http_hosts="hooks.example.org, 127.0.0.1",
        allowed="127.0.0.1, preprocessor, 192.168.0.0/16",
        resolver=resolver,
    )
    assert policy.check("http://hooks.example.org/h").addresses == [PUBLIC]
    assert policy.check("http://127.0.0.1:9000/h").addresses == ["127.0.0.1"]
    assert policy.check("https://2130706433/h").addresses == ["127.0.0.1"]  # the same address, normalised
    assert policy.check("https://preprocessor/h").addresses == ["10.96.12.7"]  # allowed by name
    assert policy.check("https://192.168.4.4/h").addresses == ["192.168.4.4"]
    for url in (
        "http://localhost/h",  # not in the http list
        "https://localhost/h",  # ::1 is not allowed (only 127.0.0.1 is)
        "https://10.0.0.1/h",
        "https://user@127.0.0.1/h",
        "https://0.0.0.0/h",  # never, whatever the lists say
    ):
        with pytest.raises(CallbackRefused):
            policy.check(url)
    assert connects == []


def test_a_zero_network_still_refuses_unspecified_and_multicast():
    policy = CallbackPolicy.from_settings("", "0.0.0.0/0", resolver=FakeResolver())
    assert policy.check("https://10.0.0.1/").addresses == ["10.0.0.1"]
    for url in ("https://0.0.0.0/", "https://224.0.0.1/"):
        with pytest.raises(CallbackRefused):
            policy.check(url)


def test_signature_round_trip_and_what_it_rejects():
    body = b'{"id":"abc","state":"succeeded"}'
    header = sign(SECRET, body)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={timestamp},v1={expected}"
    assert verify_signature(SECRET, header, body)
    assert not verify_signature("other-secret", header, body)
    assert not verify_signature(SECRET, header, body + b" ")
    assert not verify_signature(SECRET, sign(SECRET, body, int(time.time()) - 3600), body)  # replayed
    assert not verify_signature(SECRET, "v1=" + expected, body)


def _deliver(sender: CallbackSender, url: str, payload: dict | None = None) -> str:
    async def run() -> str:
        try:
            return await sender.deliver(url, payload or {"id": "job1"}, SECRET, "job1")
        finally:
            await sender.aclose()

    return asyncio.run(run())


def test_delivery_connects_to_the_checked_address_with_the_original_name(connects):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    resolver = FakeResolver(RESOLVER_ANSWERS)
    sender = CallbackSender(CallbackPolicy(resolver=resolver), 1.0, 3, transport=httpx.MockTransport(handler))
    assert _deliver(sender, "https://hooks.example.org:8443/hook?x=1", {"id": "job1"}) == "delivered"
    [request] = seen
    assert str(request.url) == f"https://{PUBLIC}:8443/hook?x=1"  # no second lookup: the checked IP
    assert request.headers["host"] == "hooks.example.org:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.org"  # TLS: SNI and cert for the name
    assert verify_signature(SECRET, request.headers[SIGNATURE_HEADER], request.content)
    assert json.loads(request.content) == {"id": "job1"}
    assert resolver.calls == [("hooks.example.org", 8443)]
    assert connects == []


def test_delivery_rechecks_and_refuses_a_name_that_now_resolves_inside(connects):
    seen: list[httpx.Request] = []
    resolver = FakeResolver({"hooks.example.org": [PUBLIC]})
    policy = CallbackPolicy(resolver=resolver)
    policy.check("https://hooks.example.org/hook")  # accepted at submission
    resolver.answers["hooks.example.org"] = ["127.0.0.1"]  # DNS rebinding before delivery
    sender = CallbackSender(policy, 1.0, 3, transport=httpx.MockTransport(lambda r: seen.append(r)))
    assert _deliver(sender, "https://hooks.example.org/hook") == "refused"
    assert seen == [] and connects == []


def test_delivery_retries_5xx_with_backoff_then_gives_up_and_never_follows_redirects():
    answers = iter([503, 502, 204])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers))

    policy = CallbackPolicy(resolver=FakeResolver(RESOLVER_ANSWERS))
    sender = CallbackSender(policy, 1.0, 3, backoff_s=0.01, transport=httpx.MockTransport(handler))
    assert _deliver(sender, "https://hooks.example.org/h") == "delivered" and len(seen) == 3
    # Each attempt is signed afresh.
    assert all(verify_signature(SECRET, r.headers[SIGNATURE_HEADER], r.content) for r in seen)

    seen.clear()
    always_503 = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(503))
    sender = CallbackSender(policy, 1.0, 2, backoff_s=0.01, transport=always_503)
    assert _deliver(sender, "https://hooks.example.org/h") == "failed" and len(seen) == 2

    seen.clear()
    redirect = httpx.MockTransport(
        lambda r: seen.append(r) or httpx.Response(302, headers={"Location": "http://127.0.0.1:8081/"})
    )
    sender = CallbackSender(policy, 1.0, 3, backoff_s=0.01, transport=redirect)
    assert _deliver(sender, "https://hooks.example.org/h") == "rejected" and len(seen) == 1


class Receiver:
    """A webhook receiver on 127.0.0.1 that records what it gets; `status`/`location` shape its answer."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, count: int = 1, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def test_a_real_receiver_on_loopback_allowed_explicitly_gets_a_signed_post_and_no_redirect(connects):
    policy = CallbackPolicy.from_settings("127.0.0.1", "127.0.0.1")
    with Receiver() as hook, Receiver() as elsewhere:
        sender = CallbackSender(policy, 2.0, 2, backoff_s=0.01)
        payload = {"id": "j", "state": "succeeded"}
        assert _deliver(sender, f"http://127.0.0.1:{hook.port}/hook", payload) == "delivered"
        [(headers, body)] = hook.received
        assert verify_signature(SECRET, headers["x-deepfake-signature"], body)
        assert json.loads(body) == payload
        with Receiver(302, f"http://127.0.0.1:{elsewhere.port}/") as redirecting:
            sender = CallbackSender(policy, 2.0, 2, backoff_s=0.01)
            assert _deliver(sender, f"http://127.0.0.1:{redirecting.port}/") == "rejected"
            assert len(redirecting.received) == 1 and elsewhere.received == []
    assert connects and all(address[0] == "127.0.0.1" for address in connects)


def test_the_same_receiver_is_refused_without_the_operator_setting(connects):
    with Receiver() as hook:
        sender = CallbackSender(CallbackPolicy(), 2.0, 1)
        assert _deliver(sender, f"http://127.0.0.1:{hook.port}/hook") == "refused"
        assert hook.received == []
    assert connects == []


# --- through the gateway ----------------------------------------------------------------------------


def make_gateway(tmp_path: Path, model_path: Path, resolver=None, **overrides) -> TestClient:
    preprocessor = create_preprocessor_app(
        ServiceSettings(upload_dir=tmp_path / "pp_uploads"),
        backend_factory=lambda: OnnxBackend(model_path, threads=1),
    )
    values = {
        "api_keys": f"{KEY},other-key",
        "job_store_url": f"sqlite:///{tmp_path / 'jobs.sqlite'}",
        "upload_dir": tmp_path / "uploads",
        "rate_limit_per_minute": 1000,
        "job_poll_s": 0.1,
        "callback_secret": SECRET,
    }
    settings = GatewaySettings(**{**values, **overrides})
    app = create_app(
        settings, preprocessor_transport=httpx.ASGITransport(app=preprocessor), callback_resolver=resolver
    )
    client = TestClient(app)
    client.headers["X-API-Key"] = KEY
    return client


def test_job_submission_refuses_internal_callbacks_with_422_and_creates_no_job(
    tmp_path, random_model_path, synth_videos, connects
):
    resolver = FakeResolver(RESOLVER_ANSWERS)
    with make_gateway(tmp_path, random_model_path, resolver, job_workers=0) as client:
        for url in (
            "http://127.0.0.1:8080/v1/jobs",
            "https://localhost/",
            "https://[::1]/",
            "https://2130706433/",
            "http://user@127.0.0.1/",
            "https://169.254.169.254/",
            "https://preprocessor:8081/v1/analyze",
        ):
            response = post_video(client, "/v1/jobs", synth_videos["pan"].path, data={"callback_url": url})
            error = assert_error_shape(response, 422, "callback_url_forbidden")
            assert "10.96" not in error["message"]  # what a name resolves to is not told
        unresolvable = post_video(
            client, "/v1/jobs", synth_videos["pan"].path, data={"callback_url": "https://nx.example.org/"}
        )
        assert_error_shape(unresolvable, 422, "callback_url_unresolvable")
        assert client.get("/v1/jobs").json() == []
        assert list((tmp_path / "uploads").iterdir()) == []  # the refused uploads were removed
        accepted = post_video(
            client, "/v1/jobs", synth_videos["pan"].path, data={"callback_url": "https://hooks.example.org/h"}
        )
        assert accepted.status_code == 202, accepted.text
    assert connects == []


def test_without_a_signing_secret_callbacks_are_refused(tmp_path, random_model_path, synth_videos, connects):
    resolver = FakeResolver(RESOLVER_ANSWERS)
    with make_gateway(tmp_path, random_model_path, resolver, job_workers=0, callback_secret="") as client:
        response = post_video(
            client, "/v1/jobs", synth_videos["pan"].path, data={"callback_url": "https://hooks.example.org/h"}
        )
        assert_error_shape(response, 422, "callbacks_disabled")
        assert resolver.calls == []
    assert connects == []


def test_per_key_secrets_sign_with_the_key_s_own_secret():
    settings = GatewaySettings(callback_secret="global", callback_key_secrets={KEY: "mine"})
    assert settings.callback_secret_for(owner_of(KEY)) == "mine"
    assert settings.callback_secret_for(owner_of("other-key")) == "global"
    assert GatewaySettings().callback_secret_for(owner_of(KEY)) is None


def test_a_finished_job_is_posted_signed_to_a_loopback_receiver_the_operator_allowed(
    tmp_path, random_model_path, synth_videos, default_detector, connects
):
    with Receiver() as hook:
        overrides = {
            "callback_http_hosts": "127.0.0.1",
            "callback_allowed_hosts": "127.0.0.1",
            "callback_key_secrets": {KEY: "key-secret"},
        }
        with make_gateway(tmp_path, random_model_path, **overrides) as client:
            url = f"http://127.0.0.1:{hook.port}/hook"
            created = post_video(client, "/v1/jobs", synth_videos["pan"].path, data={"callback_url": url})
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]
            wait_for_job(client, job_id)
            hook.wait()
        [(headers, body)] = hook.received
    status = json.loads(body)
    assert status["id"] == job_id and status["state"] == "succeeded"
    assert headers["host"] == f"127.0.0.1:{hook.port}"
    assert verify_signature("key-secret", headers["x-deepfake-signature"], body)  # the key's own secret
    assert not verify_signature(SECRET, headers["x-deepfake-signature"], body)
    assert all(address[0] == "127.0.0.1" for address in connects)
