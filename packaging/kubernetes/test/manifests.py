"""What packaging/kubernetes/check asserts about the manifests beyond their schema.

  manifests.py policy DIR
      The workload-identity wiring and the kvrun conventions: every Deployment's
      pods are labelled azure.workload.identity/use: "true" (a string) and run as
      a ServiceAccount of the same namespace annotated with a client id; kvrun is
      the container's command with `--` before the app; the init-copy pattern
      puts kvrun in a memory-backed emptyDir that the app mounts read-only.

  manifests.py run DIR --kvrun PATH --ca PATH --emulator-config PATH
      Runs each Deployment's container command as far as kvrun goes, against
      kvrun-emulator: the container's env and arguments as written, ConfigMap
      volumes written out and emptyDirs created under a scratch root (paths in
      arguments and env remapped into it), init containers' `cp` replayed with
      the image's files stood in by the kvrun build and the emulator's CA, and
      the variables the workload identity webhook injects, taken from the
      ServiceAccount. `kvrun check` must pass, then `kvrun ... -- REPORTER`
      must hand the app exactly the expected secrets, byte for byte.

Exit status 1 with one line per failure.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# What each Deployment's app must receive: variable -> the vault secret whose
# value it holds, None for a variable that must stay unset (an optional secret
# the vault does not have), or ("plain", value) for a value passed through.
EXPECTED = {
    "web": {
        "DB_PASSWORD": "web--db-password",
        "SESSION_KEY": "web--session-key",
        "NODE_ENV": ("plain", "production"),
    },
    "web-vendor": {
        "DB_PASSWORD": "web--db-password",
        "SESSION_KEY": "web--session-key",
        "SENTRY_DSN": None,
    },
}

failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL  {message}")


def ok(message):
    print(f"  ok    {message}")


def load(directory):
    docs = []
    for path in sorted(Path(directory).glob("*.yaml")):
        with open(path) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def kvrun_command(container):
    """(kvrun argv[0], kvrun's own arguments, the app's command) or None."""
    command = container.get("command") or []
    if not command or os.path.basename(command[0]) != "kvrun" or "--" not in command:
        return None
    split = command.index("--")
    return command[0], command[1:split], command[split + 1:]


def policy(directory):
    docs = load(directory)
    accounts = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in by_kind(docs, "ServiceAccount")}
    namespaces = {d["metadata"]["name"] for d in by_kind(docs, "Namespace")}
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        if doc["kind"] != "Namespace" and ns not in namespaces:
            fail(f"{doc['kind']}/{doc['metadata']['name']}: namespace {ns!r} is not among the manifests")
    for account in accounts.values():
        client_id = (account["metadata"].get("annotations") or {}).get("azure.workload.identity/client-id", "")
        if UUID.match(client_id):
            ok(f"ServiceAccount/{account['metadata']['name']}: azure.workload.identity/client-id {client_id}")
        else:
            fail(f"ServiceAccount/{account['metadata']['name']}: no client id annotation (got {client_id!r})")
    deployments = by_kind(docs, "Deployment")
    if sorted(d["metadata"]["name"] for d in deployments) != sorted(EXPECTED):
        fail(f"Deployments are {[d['metadata']['name'] for d in deployments]}, expected {sorted(EXPECTED)}")
    for deployment in deployments:
        name = f"Deployment/{deployment['metadata']['name']}"
        spec = deployment["spec"]
        template = spec["template"]
        labels = template["metadata"].get("labels") or {}
        pod = template["spec"]
        if labels.get("azure.workload.identity/use") == "true":
            ok(f"{name}: pod label azure.workload.identity/use: \"true\"")
        else:
            fail(f"{name}: pod label azure.workload.identity/use is {labels.get('azure.workload.identity/use')!r}, must be the string \"true\"")
        if not all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()):
            fail(f"{name}: the selector does not match the pod labels")
        account = (deployment["metadata"].get("namespace"), pod.get("serviceAccountName"))
        if account in accounts:
            ok(f"{name}: runs as ServiceAccount {account[1]} of its namespace")
        else:
            fail(f"{name}: serviceAccountName {account[1]!r} is not a ServiceAccount of namespace {account[0]!r} here")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{name}: automountServiceAccountToken should be false (kvrun needs only the workload identity token)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            cname = f"{name} container {container['name']}"
            parsed = kvrun_command(container)
            if parsed is None:
                fail(f"{cname}: command {container.get('command')} is not `kvrun [OPTIONS] -- APP`")
                continue
            binary, _, app = parsed
            if not app:
                fail(f"{cname}: nothing after `--`")
            ok(f"{cname}: {binary} ... -- {' '.join(app)}")
            if container.get("terminationMessagePolicy") != "FallbackToLogsOnError":
                fail(f"{cname}: terminationMessagePolicy should be FallbackToLogsOnError (kvrun's error as the termination message)")
            security = container.get("securityContext") or {}
            if security.get("allowPrivilegeEscalation") is not False or security.get("readOnlyRootFilesystem") is not True:
                fail(f"{cname}: needs allowPrivilegeEscalation: false and readOnlyRootFilesystem: true")
            if binary.startswith("/"):
                init_copy(name, pod, container, binary, volumes)
    return docs


def init_copy(name, pod, container, binary, volumes):
    """kvrun run from a volume: an emptyDir in memory, filled by an init container."""
    directory = os.path.dirname(binary)
    mount = next((m for m in container.get("volumeMounts", []) if m["mountPath"] == directory), None)
    if mount is None:
        fail(f"{name}: {binary} is not on a volume mounted at {directory}")
        return
    volume = volumes.get(mount["name"], {})
    if (volume.get("emptyDir") or {}).get("medium") == "Memory":
        ok(f"{name}: {directory} is an emptyDir with medium: Memory")
    else:
        fail(f"{name}: volume {mount['name']} at {directory} must be an emptyDir with medium: Memory")
    if mount.get("readOnly") is not True:
        fail(f"{name}: the app mounts {directory} writable; it should be readOnly")
    writers = [
        c["name"] for c in pod.get("initContainers", [])
        for m in c.get("volumeMounts", [])
        if m["name"] == mount["name"] and not m.get("readOnly")
    ]
    if writers:
        ok(f"{name}: init container {', '.join(writers)} fills {directory}")
    else:
        fail(f"{name}: no init container writes volume {mount['name']}")


def mapper(root, mounts):
    """Maps a container path under one of `mounts` into the scratch root."""
    prefixes = sorted((m["mountPath"].rstrip("/") for m in mounts), key=len, reverse=True)

    def remap(value):
        for prefix in prefixes:
            if value == prefix or value.startswith(prefix + "/"):
                return str(root) + value
        return value

    return remap


REPORTER = r"""
import hashlib, json, os, sys
names = json.loads(sys.argv[1])
print(json.dumps({n: None if os.environb.get(n.encode()) is None
                  else hashlib.sha256(os.environb[n.encode()]).hexdigest() for n in names}))
"""


def run(directory, kvrun, ca, emulator_config, workdir, webhook_env):
    docs = load(directory)
    with open(emulator_config, "rb") as f:
        vault = tomllib.load(f)["vault"][0]
    values = {s["name"]: s["value"].encode() for s in vault["secret"]}
    accounts = {d["metadata"]["name"]: d for d in by_kind(docs, "ServiceAccount")}
    config_maps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    for deployment in by_kind(docs, "Deployment"):
        dname = deployment["metadata"]["name"]
        print(f"\nDeployment/{dname}")
        pod = deployment["spec"]["template"]["spec"]
        root = Path(workdir) / dname
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for volume in volumes.values():
            (root / "volumes" / volume["name"]).mkdir(parents=True)
            if "configMap" in volume:
                data = config_maps[volume["configMap"]["name"]]["data"]
                for key, text in data.items():
                    (root / "volumes" / volume["name"] / key).write_text(text)
        for container in pod.get("initContainers", []) + pod["containers"]:
            # Each mount is a symlink from the container's path to the shared
            # volume directory, so init and app containers see the same files.
            croot = root / "containers" / container["name"]
            for mount in container.get("volumeMounts", []):
                link = Path(str(croot) + mount["mountPath"])
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(root / "volumes" / mount["name"])
            remap = mapper(croot, container.get("volumeMounts", []))
            if container in pod.get("initContainers", []):
                replay_init(container, remap, kvrun, ca)
                continue
            binary, options, _ = kvrun_command(container)
            binary = kvrun if binary == "kvrun" else remap(binary)
            if not os.access(binary, os.X_OK):
                fail(f"{dname}: {binary} is not an executable file after the init containers")
                continue
            env = {"PATH": os.environ["PATH"], **webhook_env(accounts[pod["serviceAccountName"]])}
            for entry in container.get("env", []):
                if "value" not in entry:
                    fail(f"{dname}: env {entry['name']} uses valueFrom, which this check does not replay")
                    continue
                env[entry["name"]] = remap(entry["value"])
            # The image's own CA store would hold the public roots; here the
            # emulator's CA stands in, unless the manifest names a bundle.
            env.setdefault("SSL_CERT_FILE", ca)
            argv = [binary] + [remap(a) for a in options]
            cwd = croot
            cwd.mkdir(parents=True, exist_ok=True)
            check = subprocess.run(argv + ["check"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
            print("  $ " + " ".join(["kvrun", *options, "check"]))
            print("\n".join("    " + line for line in (check.stdout + check.stderr).splitlines()))
            if check.returncode == 0:
                ok(f"{dname}: kvrun check exits 0")
            else:
                fail(f"{dname}: kvrun check exits {check.returncode}")
            expected = EXPECTED[dname]
            report = subprocess.run(
                argv + ["--", sys.executable, "-c", REPORTER, json.dumps(sorted(expected))],
                env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
            if report.returncode != 0:
                fail(f"{dname}: kvrun -- app exits {report.returncode}: {report.stderr.strip()}")
                continue
            got = json.loads(report.stdout)
            for var, source in sorted(expected.items()):
                if source is None:
                    want, what = None, "unset (optional secret absent)"
                elif isinstance(source, tuple):
                    want, what = hashlib.sha256(source[1].encode()).hexdigest(), f"passed through as {source[1]!r}"
                else:
                    want, what = hashlib.sha256(values[source]).hexdigest(), f"the value of secret {source}"
                if got.get(var) == want:
                    ok(f"{dname}: the app's {var} is {what}")
                else:
                    fail(f"{dname}: the app's {var} is not {what}")
            warnings = [line for line in report.stderr.splitlines() if line.startswith("kvrun:")]
            print("\n".join("    " + line for line in warnings))


def replay_init(container, remap, kvrun, ca):
    """An init container's `cp SOURCE... DIR`, with the image's files stood in."""
    command = container.get("command") or []
    stand_ins = {"/usr/local/bin/kvrun": kvrun, "/etc/ssl/certs/ca-certificates.crt": ca}
    if not command or command[0] != "cp" or len(command) < 3:
        fail(f"init container {container['name']}: only `cp SOURCE... DIR` is replayed, not {command}")
        return
    sources, target = command[1:-1], remap(command[-1])
    for source in sources:
        if source not in stand_ins:
            fail(f"init container {container['name']}: no stand-in for {source}")
            continue
        shutil.copy(stand_ins[source], Path(target) / os.path.basename(source))
    ok(f"init container {container['name']}: {' '.join(command)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("policy").add_argument("directory")
    r = sub.add_parser("run")
    r.add_argument("directory")
    for option in ("--kvrun", "--ca", "--emulator-config", "--workdir", "--tenant", "--authority",
                   "--token-file", "--resolve"):
        r.add_argument(option, required=True)
    args = parser.parse_args()
    if args.mode == "policy":
        policy(args.directory)
    else:
        def webhook_env(account):
            # What the workload identity webhook injects into a labelled pod.
            return {
                "AZURE_CLIENT_ID": account["metadata"]["annotations"]["azure.workload.identity/client-id"],
                "AZURE_TENANT_ID": args.tenant,
                "AZURE_FEDERATED_TOKEN_FILE": args.token_file,
                "AZURE_AUTHORITY_HOST": args.authority,
                # Not the webhook's: points the vault's DNS name at the emulator.
                "KVRUN_RESOLVE": args.resolve,
            }
        run(args.directory, args.kvrun, args.ca, args.emulator_config, args.workdir, webhook_env)
    if failures:
        print(f"\n{len(failures)} failure(s)")
        sys.exit(1)


if __name__ == "__main__":
    main()
