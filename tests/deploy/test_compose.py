"""deploy/compose.yaml runs the same images with the same environment as the dev overlay."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
import yaml

from tests.deploy import dockerfile as dfm
from tests.deploy.manifests import REPO, containers, rendered

COMPOSE = REPO / "deploy" / "compose.yaml"
TESTKIT = REPO / "deploy" / "compose.testkit.yaml"
SERVICES = ("emotion", "reasoning", "router", "benchmark", "gateway")
_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+):-([^}]*)\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def substitute(value: str) -> str:
    """Compose's ``${VAR:-default}`` with no variable set: the default."""
    return _DEFAULT.sub(lambda m: m.group(2), value)


def env_file(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in (COMPOSE.parent / path).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for path in svc.get("env_file", []):
        env.update(env_file(path))
    env.update({k: substitute(str(v)) for k, v in (svc.get("environment") or {}).items()})
    return env


def dev_env(service: str) -> tuple[dict[str, str], set[str]]:
    """The dev container's environment, and the names it takes from optional Secrets."""
    r = rendered("dev")
    (ctr,) = containers(r.get("Deployment", f"masterx-{service}"))
    env: dict[str, str] = {}
    optional: set[str] = set()
    for src in ctr.get("envFrom", []):
        env.update(r.config_map_data(src["configMapRef"]["name"]))
    for item in ctr.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = r.find("Secret", ref["name"])
        if ref.get("optional"):
            optional.add(item["name"])
        elif secret is not None:
            env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env, optional


@pytest.mark.parametrize("service", SERVICES)
def test_compose_env_matches_the_dev_overlay(service: str) -> None:
    svc = compose()["services"][f"masterx-{service}"]
    got = compose_env(svc)
    want, optional = dev_env(service)
    differ = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
    assert not differ, f"{service}: compose (got, dev) differ: {differ}"
    extra = set(got) - set(want) - optional
    assert not extra, f"{service}: compose sets {sorted(extra)}, which the dev Deployment does not"
    assert set(got) & optional == {k for k in set(got) & optional if got[k] == ""}, "optional secrets default empty"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_uses_the_dev_images_and_the_pod_hardening(service: str) -> None:
    svc = compose()["services"][f"masterx-{service}"]
    dev_images = {
        i["name"]: i
        for i in yaml.safe_load((REPO / "deploy/k8s/overlays/dev/kustomization.yaml").read_text())["images"]
    }
    entry = dev_images[f"masterx/{service}"]
    assert substitute(svc["image"]) == f"{entry.get('newName', entry['name'])}:{entry['newTag']}"
    assert dfm.parse().user(substitute(svc["image"]).split("/")[1].split(":")[0]) == svc["user"]
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert any(t.startswith("/tmp") for t in svc["tmpfs"])


def test_only_the_gateway_is_published_and_on_loopback() -> None:
    services = compose()["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"masterx-gateway"}
    assert all(substitute(p).startswith("127.0.0.1:") for p in services["masterx-gateway"]["ports"])


def test_testkit_overlay_names_only_known_services() -> None:
    kit = yaml.safe_load(TESTKIT.read_text())["services"]
    assert set(kit) - set(compose()["services"]) == {"fake-llm"}


def test_no_test_or_training_code_reaches_an_image() -> None:
    ignore = dfm.DockerIgnore()
    leaked = [
        str(p.relative_to(REPO))
        for pattern in ("masterx_runtime/testing/**/*.py", "services/*/training/**/*.py", "tests/**/*.py")
        for p in REPO.glob(pattern)
        if not ignore.excluded(str(p.relative_to(REPO)))
    ]
    assert not leaked, f"the build context would send {leaked[:5]}"
