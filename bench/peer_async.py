"""The concurrent peer: Microsoft's async Python SDK with asyncio.gather, the
fastest way that SDK offers. Gets every secret at once through the managed
identity, then execs the command with them in its environment.

    python peer_async.py COMMAND [ARGS...]

BENCH_VAULT_URL is the vault; BENCH_SECRETS lists `VAR=secret-name` entries,
comma-separated. verify_challenge_resource is off only because the SDK compares
the challenge's domain with the vault's host *and port* (the emulator's vault is
not on 443); it changes no request.
"""

import asyncio
import os
import sys

import resolve_override  # noqa: F401  (before any connection is made)
from azure.identity.aio import ManagedIdentityCredential
from azure.keyvault.secrets.aio import SecretClient


async def fetch(vault_url: str, mapping: list) -> dict:
    async with ManagedIdentityCredential() as credential:
        async with SecretClient(vault_url, credential, verify_challenge_resource=False) as client:
            secrets = await asyncio.gather(*(client.get_secret(name) for _, name in mapping))
    return {var: secret.value for (var, _), secret in zip(mapping, secrets)}


def main() -> None:
    mapping = [entry.split("=", 1) for entry in os.environ["BENCH_SECRETS"].split(",")]
    env = dict(os.environ)
    env.update(asyncio.run(fetch(os.environ["BENCH_VAULT_URL"], mapping)))
    os.execvpe(sys.argv[1], sys.argv[1:], env)


if __name__ == "__main__":
    main()
