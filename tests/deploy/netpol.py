"""Just enough of Kubernetes' NetworkPolicy semantics to ask "may A open a connection to B on
port P?" of rendered manifests, offline.

A connection is allowed when both ends allow it: the source's egress (if any policy with
policyType Egress selects the source pod) and the destination's ingress (likewise). A policy
rule allows a peer when a `from`/`to` entry matches it (an absent list matches everyone) and a
`ports` entry matches the port (an absent list matches every port). Peers:
- podSelector alone: pods in the policy's own namespace;
- namespaceSelector (with or without podSelector): pods in the namespaces it selects;
- ipBlock: addresses in the CIDR but not in `except`. Pods in these tests have no address, so
  an ipBlock only ever matches an `Endpoint` outside the cluster.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (labels + namespace, with the namespace's labels) or an address outside."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    address: str = ""


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Label selector semantics; an empty selector matches everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator, values = expression["operator"], expression.get("values", [])
        if operator == "In" and value not in values:
            return False
        if operator == "NotIn" and value in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def allowed(
    policies: list[dict[str, Any]],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Whether `source` may connect to `destination` on `port` under `policies`."""
    target = (port, protocol)
    return _direction_allows(policies, "Egress", source, destination, target) and (
        _direction_allows(policies, "Ingress", destination, source, target)
    )


def _direction_allows(
    policies: list[dict[str, Any]],
    kind: str,
    pod: Endpoint,
    peer: Endpoint,
    target: tuple[int, str],
) -> bool:
    if pod.address:  # outside the cluster: no policy of ours applies to it
        return True
    selecting = [p for p in policies if _selects(p, kind, pod)]
    if not selecting:
        return True
    rules_key, peers_key = ("egress", "to") if kind == "Egress" else ("ingress", "from")
    return any(
        _peer_matches(policy, rule.get(peers_key), peer) and _port_matches(rule, target)
        for policy in selecting
        for rule in policy["spec"].get(rules_key) or []
    )


def _selects(policy: dict[str, Any], kind: str, pod: Endpoint) -> bool:
    spec = policy["spec"]
    types = spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])
    return (
        kind in types
        and policy["metadata"].get("namespace", "") == pod.namespace
        and matches(spec.get("podSelector"), pod.labels)
    )


def _peer_matches(
    policy: dict[str, Any], peers: list[dict[str, Any]] | None, peer: Endpoint
) -> bool:
    if peers is None:
        return True
    return any(_one_peer_matches(policy, entry, peer) for entry in peers)


def _one_peer_matches(policy: dict[str, Any], entry: dict[str, Any], peer: Endpoint) -> bool:
    if "ipBlock" in entry:
        return bool(peer.address) and _in_block(entry["ipBlock"], peer.address)
    if peer.address:
        return False
    if "namespaceSelector" in entry:
        in_namespace = matches(entry["namespaceSelector"], peer.namespace_labels)
    else:
        in_namespace = peer.namespace == policy["metadata"].get("namespace", "")
    return in_namespace and matches(entry.get("podSelector"), peer.labels)


def _in_block(block: dict[str, Any], address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if ip not in ipaddress.ip_network(block["cidr"]):
        return False
    return not any(ip in ipaddress.ip_network(cidr) for cidr in block.get("except", []))


def _port_matches(rule: dict[str, Any], target: tuple[int, str]) -> bool:
    ports = rule.get("ports")
    return ports is None or any(
        (entry.get("port"), entry.get("protocol", "TCP")) == target for entry in ports
    )
