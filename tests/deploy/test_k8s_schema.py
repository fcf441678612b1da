"""Every kustomization renders, and every rendered object is valid Kubernetes (strict schemas)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate as kv  # a dev dependency: it ships the Kubernetes JSON schemas
import pytest
import yaml

from tests.deploy.manifests import K8S, TARGETS, render, render_dir

#: The oldest Kubernetes we promise (gRPC probes are GA since 1.27) and the newest schemas shipped.
VERSIONS = ("1.29", kv.latest_version())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_kustomization_renders(target: str) -> None:
    objects = render(target)
    keys = [(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= {k for k, _, _ in keys}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_rendered_objects_match_the_kubernetes_schemas(target: str, version: str) -> None:
    problems = []
    for obj in render(target):
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not problems, "\n".join(problems)


def test_the_secret_example_is_valid_kubernetes() -> None:
    for doc in yaml.safe_load_all((K8S / "secret.example.yaml").read_text()):
        kv.validate(doc, VERSIONS[-1], strict=True)
        assert all(
            v.startswith(("CHANGE-ME", "redis://:CHANGE-ME", "mongodb://masterx:CHANGE-ME"))
            for v in doc["stringData"].values()
        )


def test_schema_validation_rejects_a_broken_object() -> None:
    """The validator really checks: a misspelt field and a wrong type are both refused."""
    dep = next(o for o in render("base") if o["kind"] == "Deployment")
    bad = {**dep, "spec": {**dep["spec"], "replicaz": 2}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, VERSIONS[-1], strict=True)
    bad = {**dep, "spec": {**dep["spec"], "revisionHistoryLimit": "five"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, VERSIONS[-1], strict=True)


def test_render_reports_kustomize_errors(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RuntimeError, match=r"missing\.yaml"):
        render_dir(tmp_path)
