"""Points host names at addresses for the peers, as `kvrun --resolve` does for
kvrun: the benchmark's vault answers as NAME.vault.azure.net on 127.0.0.1, so
that every client takes the known-cloud path. Only name resolution changes;
TLS still verifies the certificate against the name.

BENCH_RESOLVE holds `HOST=ADDR` entries, comma-separated (kvrun's KVRUN_RESOLVE).
"""

import os
import socket

_MAP = dict(
    entry.split("=", 1) for entry in os.environ.get("BENCH_RESOLVE", "").split(",") if "=" in entry
)
_getaddrinfo = socket.getaddrinfo


def _resolve(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    return _getaddrinfo(_MAP.get(host, host), *args, **kwargs)


socket.getaddrinfo = _resolve
