"""Every environment variable the code reads (masterx_runtime.config.REGISTRY) against what the
manifests give each container: set where a default would be wrong in a pod, valid when set, and
secrets only from Secrets."""

from __future__ import annotations

import base64
import dataclasses
import inspect
import re
import sys
from dataclasses import dataclass

import pytest

from masterx_runtime.config import REGISTRY, ConfigError, EnvSpec, _import_all_settings, load
from tests.deploy.manifests import Obj, Rendered, containers, rendered, secret_example

SERVICES = ("emotion", "reasoning", "router", "benchmark", "gateway")
#: Sections of shared settings (masterx_runtime): every service may read them.
SHARED_SECTIONS = {"runtime", "peers", "stores", "reliability"}
#: Read by the router outside the registry (ROUTER_DISCOVER_ENV_KEYS scans for them).
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GROQ_API_KEY")
_LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])")


@dataclass(frozen=True)
class Source:
    """Where a container's variable comes from."""

    kind: str  # value | configmap | secret
    name: str  # ConfigMap/Secret name, "" for a literal
    value: str | None  # None when unknown (a secret not rendered and not in the example)
    optional: bool = False


def _registry() -> dict[str, EnvSpec]:
    _import_all_settings()
    return dict(REGISTRY)


def _settings_classes() -> list[type]:
    _import_all_settings()
    out: dict[str, type] = {}
    for name, mod in list(sys.modules.items()):
        if not name.startswith(("masterx_runtime", "services")) or mod is None:
            continue
        for obj in vars(mod).values():
            if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
                fields = dataclasses.fields(obj)
                if any("env" in f.metadata for f in fields):
                    out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(out.values())


def services_reading(spec: EnvSpec) -> set[str]:
    """Which services read a variable: shared sections -> all; else the section's (or prefix's) service."""
    if spec.section in SHARED_SECTIONS:
        return set(SERVICES)
    for candidate in (spec.section, spec.name):
        head = re.match(r"[a-z]+", candidate.lower())
        if head and head.group(0) in SERVICES:
            return {head.group(0)}
    return set()


def _secret_values(r: Rendered, name: str) -> dict[str, str] | None:
    obj = r.find("Secret", name)
    if obj is not None:
        values = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        values.update(obj.get("stringData") or {})
        return values
    example = secret_example_values().get(_unhashed(name))
    return None if example is None else dict(example)


def _unhashed(name: str) -> str:
    return re.sub(r"-[a-z0-9]{10}$", "", name)


def secret_example_values() -> dict[str, dict[str, str]]:
    import yaml

    from tests.deploy.manifests import K8S

    return {
        d["metadata"]["name"]: {k: str(v) for k, v in (d.get("stringData") or {}).items()}
        for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
        if d
    }


def effective_env(r: Rendered, c: Obj) -> dict[str, Source]:
    """The container's environment with Kubernetes precedence: envFrom in order, then env."""
    out: dict[str, Source] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            for k, v in r.config_map_data(name).items():
                out[k] = Source("configmap", name, v)
        if "secretRef" in src:
            name = src["secretRef"]["name"]
            for k, v in (_secret_values(r, name) or {}).items():
                out[k] = Source("secret", name, v, src["secretRef"].get("optional", False))
    for item in c.get("env", []):
        if "value" in item:
            out[item["name"]] = Source("value", "", item["value"])
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref:
            s = ref["secretKeyRef"]
            values = _secret_values(r, s["name"]) or {}
            out[item["name"]] = Source("secret", s["name"], values.get(s["key"]), s.get("optional", False))
        elif "configMapKeyRef" in ref:
            m = ref["configMapKeyRef"]
            out[item["name"]] = Source("configmap", m["name"], r.config_map_data(m["name"]).get(m["key"]))
    return out


def app_container(r: Rendered, service: str) -> Obj:
    (c,) = containers(r.get("Deployment", f"masterx-{service}"))
    return c


@pytest.fixture(params=("base", "dev", "prod"))
def r(request: pytest.FixtureRequest) -> Rendered:
    return rendered(request.param)


def test_every_registered_variable_belongs_to_a_service() -> None:
    orphans = sorted(name for name, spec in _registry().items() if not services_reading(spec))
    assert not orphans, (
        f"{orphans}: name the settings section after its service or add it to SHARED_SECTIONS in {__file__}"
    )


def test_loopback_defaults_are_overridden_in_every_pod(r: Rendered) -> None:
    """A default like 127.0.0.1 is right on one machine and wrong in a pod: set it, not optionally."""
    problems = []
    for name, spec in sorted(_registry().items()):
        if not (isinstance(spec.default, str) and _LOOPBACK.search(spec.default)):
            continue
        for service in sorted(services_reading(spec)):
            src = effective_env(r, app_container(r, service)).get(name)
            if src is None or src.optional:
                problems.append(f"{service}: {name} keeps its default {spec.default!r}")
            elif src.value is not None and _LOOPBACK.search(src.value):
                problems.append(f"{service}: {name}={src.value!r} points at the pod itself")
    assert not problems, "\n".join(problems)


def test_settings_load_from_the_deployed_environment(r: Rendered) -> None:
    """Every settings class a service reads parses the values the manifests give it."""
    classes = _settings_classes()
    assert classes, "no settings classes found"
    registry = _registry()
    problems = []
    for service in SERVICES:
        env = {k: s.value for k, s in effective_env(r, app_container(r, service)).items() if s.value is not None}
        for cls in classes:
            specs = [f.metadata["env"] for f in dataclasses.fields(cls) if "env" in f.metadata]
            if not any(service in services_reading(registry.get(s.name, s)) for s in specs):
                continue
            try:
                load(cls, environ=env)
            except ConfigError as exc:
                problems.append(f"{service} ({cls.__name__}): {exc}")
    assert not problems, "\n".join(problems)


def test_secret_settings_come_only_from_secrets(r: Rendered) -> None:
    registry = _registry()
    secret_names = {n for n, s in registry.items() if s.secret} | set(PROVIDER_KEYS)
    for cm in r.of_kind("ConfigMap"):
        leaked = secret_names & set(cm.get("data") or {})
        assert not leaked, f"ConfigMap {cm['metadata']['name']} holds secrets {sorted(leaked)}"
    for service in SERVICES:
        env = effective_env(r, app_container(r, service))
        wanted = {n for n, s in registry.items() if s.secret and service in services_reading(s)}
        if service == "router":
            wanted |= set(PROVIDER_KEYS)
        for name in sorted(wanted):
            assert name in env, f"{service}: secret setting {name} is not wired to any Secret"
            assert env[name].kind == "secret", f"{service}: {name} comes from a {env[name].kind}"
        for name, src in env.items():
            if name in secret_names:
                assert src.kind == "secret", f"{service}: {name} from a {src.kind}"


def test_provider_keys_reach_only_the_router(r: Rendered) -> None:
    for service in SERVICES:
        env = effective_env(r, app_container(r, service))
        present = {k for k in PROVIDER_KEYS if k in env}
        if service == "router":
            assert present == set(PROVIDER_KEYS)
            assert all(env[k].optional for k in PROVIDER_KEYS), "each provider key is optional"
        else:
            assert not present, f"{service} gets provider keys {sorted(present)}"


def test_every_variable_the_manifests_set_is_read_by_the_code(r: Rendered) -> None:
    """Catches typos and renamed settings: a misspelt variable is silently ignored by the code."""
    known = set(_registry()) | set(PROVIDER_KEYS)
    for cm in r.of_kind("ConfigMap"):
        unknown = set(cm.get("data") or {}) - known
        assert not unknown, f"ConfigMap {cm['metadata']['name']}: {sorted(unknown)} are read by no code"
    for w in r.workloads():
        if w["metadata"]["name"] in {"masterx-redis", "masterx-mongo"}:
            continue
        for c in containers(w):
            unknown = {e["name"] for e in c.get("env", [])} - known
            assert not unknown, f"{w['metadata']['name']}: {sorted(unknown)} are read by no code"


def test_secret_references_match_the_documented_secrets(r: Rendered) -> None:
    """Every Secret a pod needs is either rendered by the overlay or documented, key by key, in
    deploy/k8s/secret.example.yaml; and the example documents nothing that no pod reads."""
    example = secret_example()
    used: dict[str, set[str]] = {}
    for w in r.workloads():
        for c in containers(w):
            for item in c.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                name = _unhashed(ref["name"])
                used.setdefault(name, set()).add(ref["key"])
                rendered_secret = r.find("Secret", ref["name"])
                keys = r.secret_keys(ref["name"]) if rendered_secret else example.get(name)
                assert keys is not None, (
                    f"{w['metadata']['name']} reads Secret {name}: rendered nowhere, not documented"
                )
                assert ref["key"] in keys, f"Secret {name} has no key {ref['key']}"
    for name, keys in example.items():
        assert keys <= used.get(name, set()), (
            f"secret.example.yaml documents unused {name} keys {sorted(keys - used.get(name, set()))}"
        )


def test_shared_config_reaches_every_service(r: Rendered) -> None:
    for service in SERVICES:
        env = effective_env(r, app_container(r, service))
        for name in ("EMOTION_ADDR", "REASONING_ADDR", "ROUTER_ADDR", "BENCHMARK_ADDR", "REDIS_URL", "MONGO_URL"):
            assert name in env, f"{service} lacks {name}"
        for peer, port in (("emotion", 50051), ("reasoning", 50052), ("router", 50053), ("benchmark", 50054)):
            addr = env[f"{peer.upper()}_ADDR"].value
            host, _, p = (addr or "").rpartition(":")
            assert r.get("Service", host.split(".")[0]) and int(p) == port, f"{peer} address {addr}"
