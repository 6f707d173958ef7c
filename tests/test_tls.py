"""Built-in TLS: `faregate serve` answers https:// and wss:// itself.

A self-signed CA (made here with `cryptography`) signs faregate's
certificate; the official SDKs trust that CA and nothing else. The Node
SDK's Realtime client and the Python SDK's beta client always dial wss://,
so without TLS they could not reach faregate at all. A renewed certificate
is served to new connections without a restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import socket
import sqlite3
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fake_sessions import REPLY, FakeSessions
from node_sdk import NODE_DIR, node_sdk
from test_serve import free_port, run_serve, one_line, stop

TEXT_TURN = {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "hello over tls"}]}


@dataclass
class Pki:
    """A test CA and the files faregate serves (tls.crt / tls.key beside its config)."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def issue(self, serial: int, cert_only: bool = False) -> None:
        """Write a certificate for 127.0.0.1/localhost, signed by the CA, with `serial`
        (`cert_only`: not its new key, as a renewal caught between its two files)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faregate test")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        # Replaced whole (as cert-manager and certbot do), key first.
        files = [("tls.key", key_pem), ("tls.crt", cert.public_bytes(serialization.Encoding.PEM))]
        for name, data in files[1:] if cert_only else files:
            tmp = self.directory / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.directory / name)


@pytest.fixture
def pki(tmp_path) -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faregate test CA")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    pki = Pki(tmp_path, key, cert)
    pki.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.issue(serial=1001)
    return pki


@pytest.fixture
def sessions_upstream(upstream):
    upstream.add_route("GET", "/v1/realtime", FakeSessions().realtime)
    return upstream


def write_config(tmp_path: Path, upstream_url: str) -> Path:
    config = tmp_path / "faregate.toml"
    config.write_text(
        f'[server]\nupstream = "{upstream_url}"\n'
        'tls_cert_file = "tls.crt"\ntls_key_file = "tls.key"\n'  # beside this file
        '[storage]\nurl = "sqlite:///ledger.db"\nflush_interval_ms = 20\n')
    return config


async def start_tls_serve(pki: Pki, upstream_url: str) -> tuple[asyncio.subprocess.Process, int]:
    config = write_config(pki.directory, upstream_url)
    port = free_port()
    exe = Path(sys.executable).with_name("faregate")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}",
        cwd=pki.directory.parent, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "FAREGATE_LOG_LEVEL": "WARNING"})
    context = pki.client_context()
    async with aiohttp.ClientSession() as s:
        for _ in range(100):
            try:
                async with s.get(f"https://127.0.0.1:{port}/healthz", ssl=context) as r:
                    if r.status == 200:
                        return proc, port
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    raise AssertionError("faregate serve (TLS) did not come up")


@pytest.fixture
async def tls_faregate(pki, sessions_upstream):
    proc, port = await start_tls_serve(pki, sessions_upstream.url)
    yield port
    if proc.returncode is None:
        assert await stop(proc) == 0


def charges(pki: Pki) -> list[tuple[str, str]]:
    db = sqlite3.connect(pki.directory / "ledger.db")
    try:
        return db.execute("SELECT endpoint, model FROM charges ORDER BY endpoint").fetchall()
    finally:
        db.close()


async def served_serial(port: int, context: ssl.SSLContext) -> int:
    def handshake() -> int:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    return await asyncio.to_thread(handshake)


async def test_python_sdk_over_https_and_wss(pki, tls_faregate):
    context = pki.client_context()
    base = f"https://127.0.0.1:{tls_faregate}/v1"
    client = openai.AsyncOpenAI(base_url=base, api_key="sk-py", max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(verify=context))
    try:
        chat = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "one two"}])
        assert chat.usage.prompt_tokens == 9
        ws_options = {"ssl": context}
        async with client.realtime.connect(model="gpt-realtime",
                                           websocket_connection_options=ws_options) as conn:
            await conn.conversation.item.create(item=TEXT_TURN)
            await conn.response.create(response={"output_modalities": ["text"]})
            async for event in conn:
                if event.type == "response.done":
                    assert event.response.usage.output_tokens == len(REPLY.split())
                    break
        # The older beta client always dials wss://: it reaches faregate only over TLS.
        async with client.beta.realtime.connect(
                model="gpt-realtime", websocket_connection_options=ws_options) as beta:
            first = await beta.recv()
            assert first.type == "session.created"
    finally:
        await client.close()
    with pytest.raises(openai.APIConnectionError):  # and only a client that trusts the CA
        untrusting = openai.AsyncOpenAI(base_url=base, api_key="sk-py", max_retries=0)
        try:
            await untrusting.models.list()
        finally:
            await untrusting.close()


async def test_node_sdk_realtime_client_over_wss(pki, tls_faregate):
    node, why = await asyncio.to_thread(node_sdk)
    if node is None:
        pytest.skip(f"openai Node SDK unavailable: {why}")
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "realtime_turn.mjs"), cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "FAREGATE_URL": f"https://127.0.0.1:{tls_faregate}/v1",
             "FAREGATE_CA": str(pki.ca_file)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    done = json.loads(out.decode().strip().splitlines()[-1])
    assert done["type"] == "response.done"
    assert done["response"]["usage"]["output_tokens"] == len(REPLY.split())


async def test_the_realtime_charge_is_recorded_over_wss(pki, sessions_upstream):
    proc, port = await start_tls_serve(pki, sessions_upstream.url)
    context = pki.client_context()
    client = openai.AsyncOpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key="sk-py",
                                max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(verify=context))
    try:
        async with client.realtime.connect(
                model="gpt-realtime", websocket_connection_options={"ssl": context}) as conn:
            await conn.conversation.item.create(item=TEXT_TURN)
            await conn.response.create(response={"output_modalities": ["text"]})
            async for event in conn:
                if event.type == "response.done":
                    break
    finally:
        await client.close()
        assert await stop(proc) == 0
    assert charges(pki) == [("/v1/realtime", "gpt-realtime")]


async def test_a_renewed_certificate_is_served_without_a_restart(pki, tls_faregate):
    context = pki.client_context()
    assert await served_serial(tls_faregate, context) == 1001
    pki.issue(serial=1002)
    for _ in range(100):  # the files are polled once a second
        if await served_serial(tls_faregate, context) == 1002:
            break
        await asyncio.sleep(0.1)
    assert await served_serial(tls_faregate, context) == 1002
    # A broken file is refused and the renewed certificate stays in force.
    (pki.directory / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    await asyncio.sleep(2.5)
    assert await served_serial(tls_faregate, context) == 1002


async def test_a_renewal_caught_between_its_two_files_never_breaks_handshakes(
        pki, tls_faregate):
    """Before: a new certificate beside the old key was loaded into the live context;
    OpenSSL dropped the key that did not match it, and every handshake failed until the
    files changed again."""
    context = pki.client_context()
    pki.issue(serial=1002, cert_only=True)
    await asyncio.sleep(2.5)  # the files are polled once a second: the pair was tried
    assert await served_serial(tls_faregate, context) == 1001  # the old pair, intact


async def test_a_missing_certificate_is_one_line_and_exit_2(tmp_path, upstream):
    config = write_config(tmp_path, upstream.url)
    code, err = await run_serve(tmp_path, "--config", str(config),
                                "--listen", f"127.0.0.1:{free_port()}")
    assert code == 2
    assert f"cannot read {tmp_path / 'tls.crt'}" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faregate.toml"]
