"""Conformance: Microsoft's Python SDK (azure-identity, azure-keyvault-secrets)
against kvrun-emulator.

Each test starts the emulator binary with a config written for it, reads the
export lines it writes to --env-file, and drives the SDK as an application
would. If the SDK rejects the emulator, the emulator is wrong.
"""

import base64
import datetime
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
    WorkloadIdentityCredential,
)
from azure.keyvault.secrets import SecretClient

EMULATOR = os.environ.get("KVRUN_EMULATOR_BIN", "target/debug/kvrun-emulator")

TENANT = "72f988bf-0000-4000-8000-0000000000aa"
SYSTEM_CLIENT = "11111111-0000-4000-8000-000000000001"
UAMI_CLIENT = "11111111-0000-4000-8000-000000000002"
NOGRANT_CLIENT = "11111111-0000-4000-8000-000000000003"
SP_CLIENT = "11111111-0000-4000-8000-000000000004"
SP_SECRET = "sp-secret-value-'quoted'"
WL_CLIENT = "11111111-0000-4000-8000-000000000005"
CERT_CLIENT = "11111111-0000-4000-8000-000000000006"

# Variables that make the SDK pick a credential; each test sets only its own.
CREDENTIAL_VARS = [
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TENANT_ID",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
]


def base_config(tmp_path: Path, extra: str = "") -> str:
    return f"""
tenant_id = "{TENANT}"

[[vault]]
name = "demo"
[[vault.secret]]
name = "db-password"
value = "s3cret"
content_type = "text/plain"
tags = {{ owner = "team-a" }}
[[vault.secret]]
name = "disabled-one"
value = "nope"
enabled = false

[[identity]]
name = "system"
kind = "system-assigned"
client_id = "{SYSTEM_CLIENT}"
[[identity]]
name = "uami"
kind = "user-assigned"
client_id = "{UAMI_CLIENT}"
[[identity]]
name = "nogrant"
kind = "user-assigned"
client_id = "{NOGRANT_CLIENT}"
[[identity]]
name = "sp"
kind = "service-principal"
client_id = "{SP_CLIENT}"
secret = "{SP_SECRET}"
[[identity]]
name = "wl"
kind = "workload"
client_id = "{WL_CLIENT}"
token_file = "{tmp_path / 'wl.token'}"

[[grant]]
identity = "system"
vault = "demo"
permissions = ["all"]
[[grant]]
identity = "uami"
vault = "demo"
permissions = ["get", "list"]
[[grant]]
identity = "sp"
vault = "demo"
permissions = ["get", "list", "set"]
[[grant]]
identity = "wl"
vault = "demo"
permissions = ["get"]
{extra}
"""


class Emulator:
    """A running kvrun-emulator process and what it exported."""

    def __init__(self, tmp_path: Path, config: str, export_source: str = None):
        self.dir = tmp_path
        self.config_path = tmp_path / "emulator.toml"
        self.config_path.write_text(config)
        self.env_file = tmp_path / "emulator.env"
        self.log_file = tmp_path / "requests.jsonl"
        self.proc = subprocess.Popen(
            [
                EMULATOR,
                "--config",
                str(self.config_path),
                "--env-file",
                str(self.env_file),
                "--log-requests",
                str(self.log_file),
                *(["--export-source", export_source] if export_source else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not self.env_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("emulator did not write its env file")
            time.sleep(0.02)
        self.env = {}
        for line in self.env_file.read_text().splitlines():
            word, assignment = shlex.split(line)
            assert word == "export"
            name, _, value = assignment.partition("=")
            self.env[name] = value
        self.vault = self.env["KVRUN_VAULT"]

    def stop(self):
        self.proc.terminate()
        assert self.proc.wait(timeout=10) == 0

    def requests(self):
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]

    def apply_env(self, monkeypatch, *names):
        """Sets the CA bundle, the tenant and the named exported variables."""
        for var in CREDENTIAL_VARS:
            monkeypatch.delenv(var, raising=False)
        for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "AZURE_TENANT_ID", *names):
            monkeypatch.setenv(name, self.env[name])

    def secret_client(self, credential):
        # 127.0.0.1 is not a subdomain of the challenge resource's host, so
        # challenge-resource verification must be off (as for any emulator).
        return SecretClient(self.vault, credential, verify_challenge_resource=False)


@pytest.fixture
def start_emulator(tmp_path):
    started = []

    def start(extra: str = "", config: str = None, export_source: str = None):
        emu = Emulator(
            tmp_path, config if config is not None else base_config(tmp_path, extra), export_source
        )
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(start_emulator):
    return start_emulator()


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


# --- Managed identity -------------------------------------------------------


def test_imds_system_assigned(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    credential = ManagedIdentityCredential()
    token = credential.get_token(emulator.vault + "/.default")
    assert claims(token.token)["appid"] == SYSTEM_CLIENT
    assert token.expires_on > time.time() + 3600
    secret = emulator.secret_client(credential).get_secret("db-password")
    assert secret.value == "s3cret"
    imds = [r for r in emulator.requests() if r["endpoint"] == "imds"]
    assert imds and imds[-1]["status"] == 200


def test_imds_user_assigned_by_client_id(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    credential = ManagedIdentityCredential(client_id=UAMI_CLIENT)
    client = emulator.secret_client(credential)
    assert client.get_secret("db-password").value == "s3cret"
    vault_hits = [r for r in emulator.requests() if r["endpoint"] == "vault:demo" and r["auth"]]
    assert vault_hits[-1]["auth"]["identity"] == "uami"
    assert "client_id=" + UAMI_CLIENT in [r for r in emulator.requests() if r["endpoint"] == "imds"][-1]["query"]


def test_imds_unknown_identity_is_unavailable(emulator, monkeypatch):
    from azure.identity import CredentialUnavailableError

    emulator.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        ManagedIdentityCredential(client_id="00000000-0000-4000-8000-00000000dead").get_token(
            emulator.vault + "/.default"
        )


def test_app_service(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "IDENTITY_ENDPOINT", "IDENTITY_HEADER")
    credential = ManagedIdentityCredential()
    assert emulator.secret_client(credential).get_secret("db-password").value == "s3cret"
    hits = [r for r in emulator.requests() if r["endpoint"] == "app-service"]
    assert hits and all(r["status"] == 200 for r in hits)
    assert "api-version=2019-08-01" in hits[0]["query"]


def test_app_service_user_assigned(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "IDENTITY_ENDPOINT", "IDENTITY_HEADER")
    credential = ManagedIdentityCredential(client_id=UAMI_CLIENT)
    token = credential.get_token(emulator.vault + "/.default")
    assert claims(token.token)["appid"] == UAMI_CLIENT


@pytest.mark.parametrize(
    "source, variables, endpoint",
    [
        (
            "service-fabric",
            ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IDENTITY_API_VERSION"),
            "service-fabric",
        ),
        ("azure-ml", ("MSI_ENDPOINT", "MSI_SECRET"), "azure-ml"),
        ("cloud-shell", ("MSI_ENDPOINT",), "cloud-shell"),
    ],
)
def test_other_managed_identity_sources(start_emulator, monkeypatch, source, variables, endpoint):
    emu = start_emulator(export_source=source)
    assert "IDENTITY_HEADER" in emu.env or source != "service-fabric"
    emu.apply_env(monkeypatch, *variables)
    credential = ManagedIdentityCredential()
    token = credential.get_token(emu.vault + "/.default")
    assert claims(token.token)["appid"] == SYSTEM_CLIENT
    assert emu.secret_client(credential).get_secret("db-password").value == "s3cret"
    hits = [r for r in emu.requests() if r["endpoint"] == endpoint]
    assert hits and hits[-1]["status"] == 200


# --- Entra ID ---------------------------------------------------------------


def test_workload_identity(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_AUTHORITY_HOST")
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id=WL_CLIENT,
        token_file_path=str(emulator.dir / "wl.token"),
        authority=emulator.env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    assert emulator.secret_client(credential).get_secret("db-password").value == "s3cret"
    entra = [r for r in emulator.requests() if r["endpoint"] == "entra"]
    assert any(r["path"] == f"/{TENANT}/oauth2/v2.0/token" and r["status"] == 200 for r in entra)


def test_client_secret(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_AUTHORITY_HOST")
    credential = ClientSecretCredential(
        TENANT,
        SP_CLIENT,
        SP_SECRET,
        authority=emulator.env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    token = credential.get_token(emulator.vault + "/.default")
    assert claims(token.token)["appid"] == SP_CLIENT
    assert emulator.secret_client(credential).get_secret("db-password").value == "s3cret"


def test_client_secret_wrong_secret(emulator, monkeypatch):
    from azure.core.exceptions import ClientAuthenticationError

    emulator.apply_env(monkeypatch, "AZURE_AUTHORITY_HOST")
    credential = ClientSecretCredential(
        TENANT,
        SP_CLIENT,
        "wrong",
        authority=emulator.env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential.get_token(emulator.vault + "/.default")


def test_certificate(start_emulator, tmp_path, monkeypatch):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kvrun-conformance")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "sp-cert.pem").write_bytes(cert_pem)
    (tmp_path / "sp-cert-and-key.pem").write_bytes(key_pem + cert_pem)
    emu = start_emulator(
        f"""
[[identity]]
name = "cert-sp"
kind = "service-principal"
client_id = "{CERT_CLIENT}"
certificate = "sp-cert.pem"
[[grant]]
identity = "cert-sp"
vault = "demo"
permissions = ["get"]
"""
    )
    emu.apply_env(monkeypatch, "AZURE_AUTHORITY_HOST")
    credential = CertificateCredential(
        TENANT,
        CERT_CLIENT,
        certificate_path=str(tmp_path / "sp-cert-and-key.pem"),
        authority=emu.env["AZURE_AUTHORITY_HOST"],
        disable_instance_discovery=True,
    )
    assert emu.secret_client(credential).get_secret("db-password").value == "s3cret"


# --- Key Vault secrets ------------------------------------------------------


@pytest.fixture
def system_client(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    return emulator.secret_client(ManagedIdentityCredential())


def test_set_get_versions_update_delete(emulator, system_client):
    client = system_client
    first = client.set_secret("rotating", "v1", content_type="text/plain", tags={"a": "1"})
    second = client.set_secret("rotating", "v2")
    assert first.properties.version != second.properties.version
    assert len(second.properties.version) == 32

    latest = client.get_secret("rotating")
    assert latest.value == "v2"
    assert latest.properties.version == second.properties.version
    assert latest.properties.recovery_level == "Recoverable+Purgeable"
    assert latest.properties.recoverable_days == 90

    old = client.get_secret("rotating", first.properties.version)
    assert old.value == "v1"
    assert old.properties.content_type == "text/plain"
    assert old.properties.tags == {"a": "1"}

    versions = list(client.list_properties_of_secret_versions("rotating", max_page_size=1))
    assert sorted(v.version for v in versions) == sorted(
        [first.properties.version, second.properties.version]
    )

    expires = datetime.datetime(2031, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    updated = client.update_secret_properties(
        "rotating", content_type="application/json", tags={"b": "2"}, expires_on=expires
    )
    assert updated.content_type == "application/json"
    assert updated.tags == {"b": "2"}
    assert updated.expires_on == expires
    assert client.get_secret("rotating").properties.expires_on == expires

    client.update_secret_properties("rotating", first.properties.version, enabled=False)
    with pytest.raises(HttpResponseError) as disabled:
        client.get_secret("rotating", first.properties.version)
    assert disabled.value.status_code == 403

    deleted = client.begin_delete_secret("rotating", _polling_interval=0.01).result()
    assert deleted.name == "rotating"
    assert deleted.recovery_id.endswith("/deletedsecrets/rotating")
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("rotating")
    assert client.get_deleted_secret("rotating").name == "rotating"


def test_list_with_paging(emulator, system_client):
    client = system_client
    for i in range(5):
        client.set_secret(f"paged-{i}", str(i))
    names = [p.name for p in client.list_properties_of_secrets(max_page_size=2)]
    assert sorted(names) == sorted(
        ["db-password", "disabled-one"] + [f"paged-{i}" for i in range(5)]
    )
    pages = [
        r
        for r in emulator.requests()
        if r["endpoint"] == "vault:demo" and r["path"] == "/secrets" and r["status"] == 200
    ]
    assert len(pages) == 4
    assert all("maxresults=2" in r["query"] for r in pages)
    assert sum("skiptoken" in r["query"] for r in pages) == 3
    # List items never carry values.
    props = next(iter(client.list_properties_of_secrets()))
    assert not hasattr(props, "value")


def test_not_found(system_client):
    with pytest.raises(ResourceNotFoundError) as err:
        system_client.get_secret("missing")
    assert err.value.status_code == 404
    assert "SecretNotFound" in str(err.value)


def test_disabled(system_client):
    with pytest.raises(HttpResponseError) as err:
        system_client.get_secret("disabled-one")
    assert err.value.status_code == 403
    assert err.value.error.code == "Forbidden"


def test_forbidden_without_grant(emulator, monkeypatch):
    emulator.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    client = emulator.secret_client(ManagedIdentityCredential(client_id=NOGRANT_CLIENT))
    with pytest.raises(HttpResponseError) as err:
        client.get_secret("db-password")
    assert err.value.status_code == 403
    assert "ForbiddenByRbac" in str(err.value) or "not authorized" in str(err.value)


# --- Recovery from transient failures ---------------------------------------


def test_imds_410_is_retried(start_emulator, monkeypatch):
    emu = start_emulator(
        """
[[fault]]
endpoint = "imds"
path = "/metadata/identity/oauth2/token"
first = 1
status = 410
"""
    )
    emu.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    token = ManagedIdentityCredential().get_token(emu.vault + "/.default")
    assert claims(token.token)["appid"] == SYSTEM_CLIENT
    statuses = [r["status"] for r in emu.requests() if r["endpoint"] == "imds"]
    assert statuses == [410, 200]


def test_vault_429_with_retry_after_is_retried(start_emulator, monkeypatch):
    emu = start_emulator(
        """
[[fault]]
endpoint = "vault:demo"
path = "/secrets/db-password"
method = "GET"
first = 1
status = 429
retry_after = "1"
"""
    )
    emu.apply_env(monkeypatch, "AZURE_POD_IDENTITY_AUTHORITY_HOST")
    client = emu.secret_client(ManagedIdentityCredential())
    started = time.monotonic()
    assert client.get_secret("db-password").value == "s3cret"
    assert time.monotonic() - started >= 0.9  # Retry-After was honoured
    statuses = [
        r["status"]
        for r in emu.requests()
        if r["endpoint"] == "vault:demo" and r["path"].startswith("/secrets/db-password")
    ]
    assert 429 in statuses and statuses[-1] == 200
