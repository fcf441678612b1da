"""A small evaluator of Kubernetes NetworkPolicy semantics, to ask "may A open a connection to B:port?".

It follows the networking.k8s.io/v1 rules: a pod is isolated for a direction once any policy
selecting it lists that direction; then a connection is allowed only if some selecting policy
has a rule whose peers and ports both match (no ``from``/``to`` = every peer, no ``ports`` = every
port). A connection needs the source's egress *and* the destination's ingress. Peers:
``podSelector`` (policy's namespace), ``namespaceSelector`` (all pods there), both (pods in those
namespaces), ``ipBlock`` (addresses outside the cluster here, as CNIs do not promise ipBlock
semantics for pod IPs). Named ports resolve against the destination pod's container ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    #: container port name -> (number, protocol)
    named_ports: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class External:
    """An address outside the cluster (the internet, a managed database)."""

    ip: str


Endpoint = Pod | External


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """LabelSelector semantics: an empty selector matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Cluster:
    """Policies plus namespace labels; answers reachability questions."""

    def __init__(self, policies: Iterable[Obj], namespace_labels: Mapping[str, Mapping[str, str]]) -> None:
        self.policies = [p for p in policies if p["kind"] == "NetworkPolicy"]
        self.namespace_labels = {
            ns: {"kubernetes.io/metadata.name": ns, **labels} for ns, labels in namespace_labels.items()
        }

    def _ns_labels(self, namespace: str) -> Mapping[str, str]:
        return self.namespace_labels.get(namespace, {"kubernetes.io/metadata.name": namespace})

    def _selecting(self, pod: Pod, direction: str) -> list[Obj]:
        out = []
        for pol in self.policies:
            if pol["metadata"].get("namespace", "default") != pod.namespace:
                continue
            if not selector_matches(pol["spec"].get("podSelector") or {}, pod.labels):
                continue
            spec = pol["spec"]
            types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
            if direction in types:
                out.append(pol)
        return out

    def _peer_matches(self, peer: Obj, policy_ns: str, other: Endpoint) -> bool:
        if "ipBlock" in peer:
            if not isinstance(other, External):
                return False
            block = peer["ipBlock"]
            ip = ipaddress.ip_address(other.ip)
            if ip not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        if not isinstance(other, Pod):
            return False
        if "namespaceSelector" in peer:
            if not selector_matches(peer["namespaceSelector"], self._ns_labels(other.namespace)):
                return False
        elif other.namespace != policy_ns:
            return False
        return selector_matches(peer.get("podSelector"), other.labels)

    @staticmethod
    def _port_matches(rule_ports: list[Obj] | None, dest: Endpoint, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        for rp in rule_ports:
            if rp.get("protocol", "TCP") != protocol:
                continue
            want = rp.get("port")
            if want is None:
                return True
            if isinstance(want, str):
                if not isinstance(dest, Pod) or want not in dest.named_ports:
                    continue
                number, proto = dest.named_ports[want]
                if number == port and proto == protocol:
                    return True
                continue
            end = int(rp.get("endPort") or want)
            if int(want) <= port <= end:
                return True
        return False

    def _allowed(self, pod: Pod, other: Endpoint, direction: str, dest: Endpoint, port: int, protocol: str) -> bool:
        policies = self._selecting(pod, direction)
        if not policies:
            return True
        key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for pol in policies:
            ns = pol["metadata"].get("namespace", "default")
            for rule in pol["spec"].get(key) or []:
                peers = rule.get(peer_key)
                if peers and not any(self._peer_matches(p, ns, other) for p in peers):
                    continue
                if self._port_matches(rule.get("ports"), dest, port, protocol):
                    return True
        return False

    def can_connect(self, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
        """True when policies let ``src`` open a connection to ``dst:port``."""
        if isinstance(src, Pod) and not self._allowed(src, dst, "Egress", dst, port, protocol):
            return False
        return not (isinstance(dst, Pod) and not self._allowed(dst, src, "Ingress", dst, port, protocol))


def pod_of(workload: Obj, namespace: str) -> Pod:
    """The Pod a Deployment/StatefulSet creates, with its labels and named container ports."""
    spec = workload["spec"]["template"]
    ports: dict[str, tuple[int, str]] = {}
    for c in spec["spec"]["containers"]:
        for p in c.get("ports") or []:
            if "name" in p:
                ports[p["name"]] = (p["containerPort"], p.get("protocol", "TCP"))
    return Pod(namespace, dict(spec["metadata"].get("labels") or {}), ports, workload["metadata"]["name"])
