"""Invariants of the rendered Deployments, Services, HPAs and PDBs in every kustomization."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import Obj, Rendered, containers, iter_probes, pod_labels, rendered
from tests.deploy.netpol import selector_matches

TARGETS = ("base", "dev", "prod")
GRPC_SERVICES = {
    "emotion": (50051, "masterx.emotion.v1.EmotionService"),
    "reasoning": (50052, "masterx.reasoning.v1.ReasoningService"),
    "router": (50053, "masterx.router.v1.RouterService"),
    "benchmark": (50054, "masterx.benchmark.v1.BenchmarkService"),
}
APP_SERVICES = (*GRPC_SERVICES, "gateway")
WITH_HPA = {"emotion", "router", "gateway"}
PRESTOP_SLEEP_SECONDS = 5


def deployment(r: Rendered, service: str) -> Obj:
    return r.get("Deployment", f"masterx-{service}")


def container_of(r: Rendered, service: str) -> Obj:
    (c,) = containers(deployment(r, service))
    return c


def declared_ports(c: Obj) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in c.get("ports", [])}


def resolve_port(c: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return declared_ports(c)[port]


def env_value(r: Rendered, c: Obj, name: str) -> str | None:
    """Literal value of ``name`` as the container would see it (env wins over envFrom)."""
    for item in c.get("env", []):
        if item["name"] == name:
            return item.get("value")
    value = None
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            value = r.config_map_data(src["configMapRef"]["name"]).get(name, value)
    return value


@pytest.fixture(params=TARGETS)
def r(request: pytest.FixtureRequest) -> Rendered:
    return rendered(request.param)


def test_one_deployment_and_service_per_service(r: Rendered) -> None:
    for service in APP_SERVICES:
        dep = deployment(r, service)
        svc = r.get("Service", f"masterx-{service}")
        assert selector_matches({"matchLabels": svc["spec"]["selector"]}, pod_labels(dep))
        assert selector_matches(dep["spec"]["selector"], pod_labels(dep))


@pytest.mark.parametrize("service", sorted(GRPC_SERVICES))
def test_grpc_probes_use_native_grpc_health(r: Rendered, service: str) -> None:
    port, full_name = GRPC_SERVICES[service]
    c = container_of(r, service)
    probes = dict(iter_probes(c))
    assert set(probes) == {"startupProbe", "livenessProbe", "readinessProbe"}, f"{service}: {sorted(probes)}"
    for kind, probe in probes.items():
        assert "grpc" in probe, f"{service} {kind} is not a gRPC probe"
        assert probe["grpc"]["port"] == port
    # Liveness/startup: the overall status (""); readiness: the service's own name.
    assert probes["livenessProbe"]["grpc"].get("service", "") == ""
    assert probes["startupProbe"]["grpc"].get("service", "") == ""
    assert probes["readinessProbe"]["grpc"]["service"] == full_name


def test_emotion_startup_allows_slow_model_loading(r: Rendered) -> None:
    probe = container_of(r, "emotion")["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= 120, f"emotion gets only {budget}s to load and warm its model"


def test_liveness_does_not_kill_a_draining_pod(r: Rendered) -> None:
    """Liveness reads the overall status, NOT_SERVING while draining: it must not fail before
    the pod's termination grace runs out."""
    for service in APP_SERVICES:
        c = container_of(r, service)
        probe = c["livenessProbe"]
        tolerated = probe["periodSeconds"] * probe["failureThreshold"]
        grace = deployment(r, service)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert tolerated > grace, f"{service}: liveness fails after {tolerated}s, grace is {grace}s"


def test_gateway_probes_are_http_health_endpoints(r: Rendered) -> None:
    c = container_of(r, "gateway")
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert env_value(r, c, "GATEWAY_HOST") == "0.0.0.0"


def test_every_probe_port_is_a_declared_container_port(r: Rendered) -> None:
    for w in r.workloads():
        for c in containers(w):
            ports = set(declared_ports(c).values())
            for kind, probe in iter_probes(c):
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    if handler in probe:
                        port = resolve_port(c, probe[handler]["port"])
                        assert port in ports, f"{w['metadata']['name']} {kind} probes port {port}, declares {ports}"


def test_application_listens_on_the_declared_ports(r: Rendered) -> None:
    for service, (port, _) in GRPC_SERVICES.items():
        c = container_of(r, service)
        ports = declared_ports(c)
        assert ports["grpc"] == port == int(env_value(r, c, "MASTERX_GRPC_PORT") or 0)
        assert ports["metrics"] == int(env_value(r, c, "MASTERX_METRICS_PORT") or 0)
        assert env_value(r, c, "MASTERX_GRPC_HOST") == "0.0.0.0", "bound to loopback: probes and peers fail"
    gw = container_of(r, "gateway")
    assert declared_ports(gw)["http"] == int(env_value(r, gw, "GATEWAY_PORT") or 0)


def test_every_service_targets_a_real_container_port(r: Rendered) -> None:
    for svc in r.of_kind("Service"):
        selector = svc["spec"].get("selector") or {}
        pods = [w for w in r.workloads() if selector and selector_matches({"matchLabels": selector}, pod_labels(w))]
        assert len(pods) == 1, f"Service {svc['metadata']['name']} selects {len(pods)} workloads"
        (c,) = containers(pods[0])
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert (
                (target in declared_ports(c)) if isinstance(target, str) else (target in declared_ports(c).values())
            ), f"Service {svc['metadata']['name']} port {p['port']} -> {target}: no such container port"


def test_resources_have_requests_and_limits(r: Rendered) -> None:
    for w in r.workloads():
        for c in containers(w):
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(section) or {}), f"{w['metadata']['name']}: {section}"


def test_containers_are_non_root_and_read_only(r: Rendered) -> None:
    for w in r.workloads():
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        pod_sc = pod.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True, name
        assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0, name
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v or "persistentVolumeClaim" in v}
        writable |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in containers(w):
            sc = c.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not sc.get("privileged"), name
            for m in c.get("volumeMounts", []):
                assert m["name"] in writable, f"{name}: mount {m['name']} is not an emptyDir/volume"
        if w["metadata"]["name"] in {f"masterx-{s}" for s in APP_SERVICES}:
            mounts = {m["mountPath"] for c in containers(w) for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{name}: read-only root needs a writable /tmp"


def test_termination_grace_exceeds_prestop_plus_drain(r: Rendered) -> None:
    for service in APP_SERVICES:
        dep = deployment(r, service)
        c = container_of(r, service)
        grace_var = "GATEWAY_SHUTDOWN_GRACE_SECONDS" if service == "gateway" else "MASTERX_SHUTDOWN_GRACE_SECONDS"
        drain = float(env_value(r, c, grace_var) or 10.0)
        assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SLEEP_SECONDS)]
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > PRESTOP_SLEEP_SECONDS + drain, f"{service}: {grace}s <= {PRESTOP_SLEEP_SECONDS}s + {drain}s"


def test_hpas_scale_existing_deployments(r: Rendered) -> None:
    hpas = {h["metadata"]["name"]: h for h in r.of_kind("HorizontalPodAutoscaler")}
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {f"masterx-{s}" for s in WITH_HPA}
    for h in hpas.values():
        assert h["apiVersion"] == "autoscaling/v2"
        ref = h["spec"]["scaleTargetRef"]
        dep = r.get(ref["kind"], ref["name"])
        assert "replicas" not in dep["spec"], f"{ref['name']}: the HPA owns replicas; a fixed count fights it"
        assert 1 <= h["spec"]["minReplicas"] <= h["spec"]["maxReplicas"]
        (c,) = containers(dep)
        assert "cpu" in c["resources"]["requests"], "CPU utilisation needs a CPU request"


def test_pdbs_cover_every_service_and_never_block_drains(r: Rendered) -> None:
    pdbs = r.of_kind("PodDisruptionBudget")
    for service in APP_SERVICES:
        dep = deployment(r, service)
        covering = [p for p in pdbs if selector_matches(p["spec"]["selector"], pod_labels(dep))]
        assert len(covering) == 1, f"{service}: {len(covering)} PDBs"
        spec = covering[0]["spec"]
        # minAvailable 1 with one replica would block every node drain; maxUnavailable 1 never does.
        assert spec.get("maxUnavailable") == 1 and "minAvailable" not in spec


def test_emotion_and_router_threads_fit_their_cpu_limit(r: Rendered) -> None:
    for service, var in (("emotion", "EMOTION_INTRA_OP_THREADS"), ("router", "ROUTER_LOCAL_THREADS")):
        c = container_of(r, service)
        limit = c["resources"]["limits"]["cpu"]
        cores = float(limit[:-1]) / 1000 if str(limit).endswith("m") else float(limit)
        threads = int(env_value(r, c, var) or 0)
        if service == "emotion":
            assert threads >= 1, "EMOTION_INTRA_OP_THREADS=0 sizes the pool by the node, not the pod"
        assert threads <= max(cores, 1), f"{service}: {threads} threads on a {cores}-CPU limit"


def test_dev_runs_stores_in_cluster_and_prod_does_not() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    for store, port in (("redis", 6379), ("mongo", 27017)):
        sts = dev.get("StatefulSet", f"masterx-{store}")
        assert sts["spec"]["replicas"] == 1
        (c,) = containers(sts)
        assert c["image"].split(":")[0] == store and c["image"].split(":")[1].startswith("7")
        assert dev.get("Service", f"masterx-{store}")["spec"]["ports"][0]["port"] == port
    assert prod.of_kind("StatefulSet") == []
    assert not [s for s in prod.of_kind("Service") if s["metadata"]["name"] in {"masterx-redis", "masterx-mongo"}]
    urls = dev.get("Secret", next(s["metadata"]["name"] for s in dev.of_kind("Secret")))
    assert urls["metadata"]["name"].startswith("masterx-stores")


def test_dev_store_urls_point_at_the_in_cluster_services() -> None:
    import base64

    dev = rendered("dev")
    (secret,) = [s for s in dev.of_kind("Secret") if s["metadata"]["name"].startswith("masterx-stores")]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["REDIS_URL"].startswith("redis://masterx-redis:6379")
    assert data["MONGO_URL"].startswith("mongodb://masterx-mongo:27017")


def test_prod_commits_no_secret_and_pins_images() -> None:
    prod = rendered("prod")
    assert prod.of_kind("Secret") == [], "prod Secrets are created by the operator, never rendered from the repo"
    for w in prod.workloads():
        for c in containers(w):
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"unpinned image {image}"
            assert "/" in image.split(":")[0] and "." in image.split("/")[0], f"{image}: not from a registry host"


def test_prod_emotion_runs_on_a_gpu_node() -> None:
    prod = rendered("prod")
    dep = deployment(prod, "emotion")
    pod = dep["spec"]["template"]["spec"]
    c = container_of(prod, "emotion")
    assert c["image"].split(":")[0].endswith("/emotion-gpu")
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert int(c["resources"]["requests"]["nvidia.com/gpu"]) == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    # Nothing else asks for a GPU, and dev runs emotion on CPU.
    for w in prod.workloads():
        if w is not dep:
            assert not any("nvidia.com/gpu" in str(c.get("resources")) for c in containers(w))
    dev_c = container_of(rendered("dev"), "emotion")
    assert "nvidia.com/gpu" not in str(dev_c["resources"]) and dev_c["image"] == "masterx/emotion:dev"


def test_prod_requires_the_admin_key_dev_does_not() -> None:
    for target, optional in (("dev", True), ("prod", False)):
        c = container_of(rendered(target), "gateway")
        (item,) = [e for e in c["env"] if e["name"] == "GATEWAY_ADMIN_API_KEYS"]
        assert item["valueFrom"]["secretKeyRef"]["optional"] is optional


def test_every_object_lives_in_the_overlay_namespace() -> None:
    for target, ns in (("dev", "masterx-dev"), ("prod", "masterx")):
        r = rendered(target)
        namespace = r.get("Namespace", ns)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for o in r.objects:
            if o["kind"] != "Namespace":
                assert o["metadata"].get("namespace") == ns, f"{o['kind']}/{o['metadata']['name']}"


def test_ingress_exposes_only_the_gateway(r: Rendered) -> None:
    ingresses = r.of_kind("Ingress")
    assert len(ingresses) == 1
    backends = {
        p["backend"]["service"]["name"] for rule in ingresses[0]["spec"]["rules"] for p in rule["http"]["paths"]
    }
    assert backends == {"masterx-gateway"}
    for svc in r.of_kind("Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{svc['metadata']['name']} is exposed"
