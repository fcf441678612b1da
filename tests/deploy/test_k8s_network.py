"""Who can reach whom under the rendered NetworkPolicies (evaluated by tests/deploy/netpol.py)."""

from __future__ import annotations

import pytest

from tests.deploy.manifests import Rendered, rendered
from tests.deploy.netpol import Cluster, External, Pod, pod_of

INTERNET = External("203.0.113.7")  # TEST-NET-3: "somewhere on the internet"
METADATA = External("169.254.169.254")
MANAGED_DB = External("10.20.30.40")  # a managed Redis/MongoDB in the VPC
APPS = ("emotion", "reasoning", "router", "benchmark", "gateway")
GRPC_PORTS = {"emotion": 50051, "reasoning": 50052, "router": 50053, "benchmark": 50054}
METRICS_PORTS = {"emotion": 9101, "reasoning": 9102, "router": 9103, "benchmark": 9104}
NAMESPACE = {"dev": "masterx-dev", "prod": "masterx"}


class World:
    def __init__(self, target: str) -> None:
        self.r: Rendered = rendered(target)
        self.ns = NAMESPACE[target]
        self.cluster = Cluster(self.r.of_kind("NetworkPolicy"), {self.ns: {}, "kube-system": {}, "monitoring": {}})
        self.pods = {w["metadata"]["name"].removeprefix("masterx-"): pod_of(w, self.ns) for w in self.r.workloads()}
        self.dns = Pod("kube-system", {"k8s-app": "kube-dns"}, {"dns": (53, "UDP")})
        self.prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
        self.stranger = Pod(self.ns, {"app": "debug-shell"})  # an unlabelled pod in the same namespace

    def can(self, src: Pod | External | str, dst: Pod | External | str, port: int, proto: str = "TCP") -> bool:
        s = self.pods[src] if isinstance(src, str) else src
        d = self.pods[dst] if isinstance(dst, str) else dst
        return self.cluster.can_connect(s, d, port, proto)


@pytest.fixture(params=("dev", "prod"))
def world(request: pytest.FixtureRequest) -> World:
    return World(request.param)


def test_default_deny_covers_every_pod(world: World) -> None:
    deny = world.r.get("NetworkPolicy", "masterx-default-deny")
    assert deny["spec"]["podSelector"] == {} and set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]


def test_only_the_gateway_is_reachable_from_outside(world: World) -> None:
    assert world.can(INTERNET, "gateway", 8080)
    for app, port in GRPC_PORTS.items():
        assert not world.can(INTERNET, app, port), f"{app}:{port} reachable from the internet"
        assert not world.can(INTERNET, app, METRICS_PORTS[app])
    for store, port in (("redis", 6379), ("mongo", 27017)):
        if store in world.pods:
            assert not world.can(INTERNET, store, port)


def test_services_reach_each_other_over_grpc(world: World) -> None:
    for caller in APPS:
        for callee, port in GRPC_PORTS.items():
            if caller != callee:
                assert world.can(caller, callee, port), f"{caller} cannot call {callee}:{port}"


def test_unrelated_pods_in_the_namespace_are_shut_out(world: World) -> None:
    for app, port in GRPC_PORTS.items():
        assert not world.can(world.stranger, app, port)


def test_prometheus_scrapes_metrics_but_cannot_call_rpcs(world: World) -> None:
    for app, port in METRICS_PORTS.items():
        assert world.can(world.prometheus, app, port), f"{app} metrics not scrapable"
        assert not world.can(world.prometheus, app, GRPC_PORTS[app])


def test_only_the_router_reaches_the_internet(world: World) -> None:
    assert world.can("router", INTERNET, 443)
    assert not world.can("router", INTERNET, 80), "plain-HTTP egress is not needed"
    assert not world.can("router", METADATA, 443), "the cloud metadata endpoint must stay closed"
    for app in APPS:
        if app != "router":
            assert not world.can(app, INTERNET, 443), f"{app} reaches the internet"


def test_every_pod_resolves_names(world: World) -> None:
    for name in world.pods:
        assert world.can(name, world.dns, 53, "UDP"), f"{name} cannot reach DNS"
        assert world.can(name, world.dns, 53, "TCP")


def test_dev_stores_are_reachable_in_cluster_only() -> None:
    w = World("dev")
    for app in APPS:
        assert w.can(app, "redis", 6379) and w.can(app, "mongo", 27017)
    assert not w.can(w.stranger, "redis", 6379)
    for store in ("redis", "mongo"):
        assert not w.can(store, INTERNET, 443)
    assert not w.can("emotion", MANAGED_DB, 27017), "dev has no external stores"


def test_prod_reaches_external_stores_on_their_ports_only() -> None:
    w = World("prod")
    for app in APPS:
        assert w.can(app, MANAGED_DB, 6379) and w.can(app, MANAGED_DB, 27017)
        assert not w.can(app, MANAGED_DB, 22)
    assert not w.can("gateway", METADATA, 6379)


# --------------------------------------------------------------------------- the evaluator itself

POLICY_NS = "ns"


def _policy(spec: dict) -> dict:
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": POLICY_NS}, "spec": spec}


def test_evaluator_allows_everything_without_policies() -> None:
    c = Cluster([], {POLICY_NS: {}})
    assert c.can_connect(Pod(POLICY_NS, {"a": "1"}), Pod(POLICY_NS, {"b": "1"}), 80)


def test_evaluator_isolates_selected_pods_only() -> None:
    c = Cluster(
        [_policy({"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"]})], {POLICY_NS: {}}
    )
    db, web = Pod(POLICY_NS, {"role": "db"}), Pod(POLICY_NS, {"role": "web"})
    assert not c.can_connect(web, db, 5432)
    assert c.can_connect(db, web, 80)


def test_evaluator_peers_ports_and_named_ports() -> None:
    pol = _policy(
        {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["web"]}]}}
                    ],
                    "ports": [{"port": "sql"}],
                }
            ],
        }
    )
    c = Cluster([pol], {POLICY_NS: {}, "other": {}})
    db = Pod(POLICY_NS, {"role": "db"}, {"sql": (5432, "TCP")})
    assert c.can_connect(Pod(POLICY_NS, {"role": "web"}), db, 5432)
    assert not c.can_connect(Pod(POLICY_NS, {"role": "web"}), db, 5433)
    assert not c.can_connect(Pod(POLICY_NS, {"role": "web"}), db, 5432, "UDP")
    assert not c.can_connect(Pod("other", {"role": "web"}), db, 5432), "podSelector alone is same-namespace"
    assert not c.can_connect(External("198.51.100.1"), db, 5432)


def test_evaluator_ip_blocks_and_egress() -> None:
    pol = _policy(
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                    "ports": [{"port": 443, "endPort": 445}],
                }
            ],
        }
    )
    c = Cluster([pol], {POLICY_NS: {}})
    src = Pod(POLICY_NS, {})
    assert c.can_connect(src, External("10.2.3.4"), 444)
    assert not c.can_connect(src, External("10.1.3.4"), 443)
    assert not c.can_connect(src, External("10.2.3.4"), 446)
    assert not c.can_connect(src, Pod(POLICY_NS, {}), 443), "ipBlock does not select pods"


def test_evaluator_namespace_and_pod_selector_together() -> None:
    pol = _policy(
        {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": "ops"}},
                            "podSelector": {"matchLabels": {"app": "prom"}},
                        }
                    ]
                }
            ],
        }
    )
    c = Cluster([pol], {POLICY_NS: {}, "mon": {"team": "ops"}, "dev": {}})
    dst = Pod(POLICY_NS, {})
    assert c.can_connect(Pod("mon", {"app": "prom"}), dst, 9100)
    assert not c.can_connect(Pod("mon", {"app": "other"}), dst, 9100)
    assert not c.can_connect(Pod("dev", {"app": "prom"}), dst, 9100)
