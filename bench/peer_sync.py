"""The sequential peer: what users usually write with Microsoft's Python SDK
to start a process with Key Vault secrets. Gets each secret in turn through
the managed identity, then execs the command with them in its environment.

    python peer_sync.py COMMAND [ARGS...]

BENCH_VAULT_URL is the vault; BENCH_SECRETS lists `VAR=secret-name` entries,
comma-separated. verify_challenge_resource is off only because the SDK compares
the challenge's domain with the vault's host *and port* (the emulator's vault is
not on 443); it changes no request.
"""

import os
import sys

import resolve_override  # noqa: F401  (before any connection is made)
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient


def main() -> None:
    mapping = [entry.split("=", 1) for entry in os.environ["BENCH_SECRETS"].split(",")]
    client = SecretClient(
        os.environ["BENCH_VAULT_URL"], ManagedIdentityCredential(), verify_challenge_resource=False
    )
    env = dict(os.environ)
    for var, name in mapping:
        env[var] = client.get_secret(name).value
    os.execvpe(sys.argv[1], sys.argv[1:], env)


if __name__ == "__main__":
    main()
