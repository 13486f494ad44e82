"""TLS and mTLS on the gRPC port, and the gateway's channel to it, with certificates
generated here (a throwaway CA, a server certificate for 127.0.0.1/localhost and a
client certificate)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from conftest import Running, StartServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.gateway import start_gateway
from support.rpc import Client
from vidscan_client import AsyncVidscanClient, VidscanClient, tls_credentials

from server.main import token_authority


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    common: str,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    out = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("vidscan test CA")
    server_key, server = _leaf(
        ca_key,
        ca,
        "vidscan",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key, client = _leaf(ca_key, ca, "vidscan-gateway", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _, other = _ca("someone else's CA")
    return Pki(
        ca=_write_cert(out / "ca.pem", ca),
        server_cert=_write_cert(out / "server.pem", server),
        server_key=_write_key(out / "server.key", server_key),
        client_cert=_write_cert(out / "client.pem", client),
        client_key=_write_key(out / "client.key", client_key),
        other_ca=_write_cert(out / "other-ca.pem", other),
    )


def credentials(
    pki: Pki, *, ca: Path | None = None, client: bool = False
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=(ca or pki.ca).read_bytes(),
        private_key=pki.client_key.read_bytes() if client else None,
        certificate_chain=pki.client_cert.read_bytes() if client else None,
    )


def health_check(target: str, creds: grpc.ChannelCredentials | None) -> int:
    channel = (
        grpc.secure_channel(target, creds) if creds is not None else grpc.insecure_channel(target)
    )
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        return int(reply.status)


SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
async def tls_server(start_server: StartServer, pki: Pki) -> Running:
    return await start_server(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)


@pytest.fixture
async def mtls_server(start_server: StartServer, pki: Pki) -> Running:
    return await start_server(
        tls_cert_file=pki.server_cert, tls_key_file=pki.server_key, tls_client_ca_file=pki.ca
    )


async def serving(target: str, creds: grpc.ChannelCredentials | None) -> int:
    # A thread: the server under test runs on this event loop.
    return await asyncio.to_thread(health_check, target, creds)


async def refused(target: str, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The code a refused connection ends the call with: UNAVAILABLE once the TLS
    handshake fails, DEADLINE_EXCEEDED when a plaintext client waits on a TLS port."""
    with pytest.raises(grpc.RpcError) as caught:
        await serving(target, creds)
    code: grpc.StatusCode = caught.value.code()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return code


async def test_tls_serves_only_clients_that_verify_it(tls_server: Running, pki: Pki) -> None:
    target = tls_server.target
    assert await serving(target, credentials(pki)) == SERVING
    await refused(target, None)  # plaintext
    await refused(target, credentials(pki, ca=pki.other_ca))  # a server it cannot verify
    # An upload over TLS: the whole API, not only health.
    token = token_authority(tls_server.settings).mint("tls-user")
    async with grpc.aio.secure_channel(target, credentials(pki)) as channel:
        session = await Client(channel, token, target).new_session()
        assert session.session_id


async def test_mtls_needs_a_client_certificate_from_the_ca(mtls_server: Running, pki: Pki) -> None:
    target = mtls_server.target
    assert await serving(target, credentials(pki, client=True)) == SERVING
    await refused(target, credentials(pki))  # no client certificate


@pytest.fixture
def tls_gateway_args(pki: Pki) -> Iterator[list[str]]:
    yield [
        "-upstream-ca-file",
        str(pki.ca),
        "-upstream-cert-file",
        str(pki.client_cert),
        "-upstream-key-file",
        str(pki.client_key),
    ]


async def test_the_gateway_reaches_an_mtls_server(
    mtls_server: Running, tls_gateway_args: list[str], tmp_path: Path
) -> None:
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=mtls_server.target,
        max_upload_bytes=mtls_server.settings.max_upload_bytes,
        workdir=tmp_path,
        args=tls_gateway_args,
    )
    try:
        token = token_authority(mtls_server.settings).mint("gateway-tls-user")
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            response = await http.post(
                "/v1/dashboard/upload/sessions",
                headers={"Authorization": f"Bearer {token}"},
                json={},
            )
            assert response.status_code == 200, response.text
            assert response.json()["session_id"]
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_the_gateway_without_the_ca_cannot_reach_a_tls_server(
    tls_server: Running, tmp_path: Path
) -> None:
    gateway = await asyncio.to_thread(
        start_gateway,
        upstream=tls_server.target,
        max_upload_bytes=tls_server.settings.max_upload_bytes,
        workdir=tmp_path,
        wait_healthy=False,
    )
    try:
        token = token_authority(tls_server.settings).mint("gateway-plain-user")
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as http:
            response = await http.post(
                "/v1/dashboard/upload/sessions",
                headers={"Authorization": f"Bearer {token}"},
                json={},
            )
            assert response.status_code == 503, response.text
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_the_python_client_over_mtls(mtls_server: Running, pki: Pki) -> None:
    token = token_authority(mtls_server.settings).mint("client-tls-user")
    creds = tls_credentials(
        ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
    )

    def create() -> str:
        with VidscanClient(mtls_server.target, token, credentials=creds) as client:
            return str(client.create_session().session_id)

    assert await asyncio.to_thread(create)
    async with AsyncVidscanClient(mtls_server.target, token, credentials=creds) as aclient:
        assert (await aclient.create_session()).session_id
