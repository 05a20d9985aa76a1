"""Kubernetes cannot run on this machine kind (no kubelet or API server in any package source
we can reach), while the compose stack runs for real in `make compose-test`. So the k8s dev
overlays are held to what compose runs, offline (the wiring values: the dev overlay's):

- every workload runs the same image repository with the same command and arguments;
- its wiring (listen addresses, targets, URLs, the metrics port) has the same values, and
  every variable a container sets itself is one compose sets for that service;
- its container ports are the ones it listens on, and every probe names one of them;
- the calls between services, derived from which settings each process's code reads, are
  exactly the ones tests/deploy/test_k8s.py asks the NetworkPolicies to allow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("kubernetes_validate")

from tests.deploy import compose_files  # noqa: E402 - needs yaml, so after importorskip
from tests.deploy.test_k8s import CALLS, WORKLOAD_KINDS, _of_kind, _render  # noqa: E402 - needs yaml, so after importorskip

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.dev.yml"]
DEV_ENV = ROOT / "deploy" / "compose" / "dev.env"
# Settings that wire processes together: k8s and compose must agree on their values.
WIRING = re.compile(r"^PAYSUITE_\w+_(LISTEN|TARGET|URL|PORT|HOST)$")
# Where the two differ on purpose, and why.
DIFFERENT_ON_PURPOSE = {
    # Each pod's Postgres URL comes from its Secret; compose spells it out from the password.
    "PAYSUITE_DATABASE_URL",
    # The simulators keep their charges on a compose volume; in k8s (dev only) an emptyDir.
    "PAYSUITE_SIMULATOR_DATA_DIR",
    # Kubernetes callers resolve every pod behind a headless Service (dns:///wallet:50052) and
    # balance over them; compose runs one container per service, reached by its name.
    "PAYSUITE_PAYMENT_TARGET",
    "PAYSUITE_WALLET_TARGET",
    "PAYSUITE_GATEWAY_TARGET",
}
# Variables compose sets that a k8s workload does without, and why.
COMPOSE_ONLY = {
    # The one-shot migration serves no metrics and calls no service, so it needs neither the
    # metrics port nor a token key; compose gives them through the block every process shares.
    ("migrate", "PAYSUITE_METRICS_PORT"),
    ("migrate", "PAYSUITE_AUTH_SECRET"),
}
# Variables a k8s container sets itself that compose leaves to the default, and why.
K8S_ONLY = {
    # The pod name. Compose has no per-container value to give, and one fixed name would be
    # shared by `--scale`d replicas, which must never share one; the default there,
    # <hostname>-<pid>, has the container id as hostname, kept across its restarts.
    "PAYSUITE_REPLICA_NAME",
}
# Which process each package is, and which settings name the services it calls.
PROCESS_SOURCES = {
    "payment": ("payment_service",),
    "wallet": ("wallet_service",),
    "gateway": ("gateway_service",),
    "webhook-adapter": ("webhook_adapter",),
    "recovery-worker": ("recovery_worker",),
}
TARGET_SETTINGS = {
    "payment_target": "payment",
    "wallet_target": "wallet",
    "gateway_target": "gateway",
}
SERVICE_PORTS = {"payment": 50051, "wallet": 50052, "gateway": 50053}


@pytest.fixture(scope="module", params=["dev", "prod"])
def k8s(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


@pytest.fixture(scope="module")
def k8s_dev() -> list[dict[str, Any]]:
    # The overlay that runs what compose runs (the simulators in place of a real provider),
    # so its wiring can be compared value for value; prod points at real providers.
    return _render("dev")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    env = compose_files.read_env_file(DEV_ENV)
    services: dict[str, Any] = compose_files.load(COMPOSE_FILES, env)["services"]
    return services


def _containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The one container of each workload (all of ours have one), by workload name."""
    found = {}
    for name, workload in _of_kind(objects, *WORKLOAD_KINDS).items():
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        found[name] = container
    return found


def _environment(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's variables: its ConfigMaps' keys, then its own env (a Secret reference
    reads as `<secret>`)."""
    config_maps = _of_kind(objects, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value", "<secret>")
    return env


def test_every_k8s_workload_is_a_compose_service_with_the_same_image_and_command(
    k8s: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    containers = _containers(k8s)
    assert set(containers) <= set(compose)
    for name, container in containers.items():
        service = compose[name]
        assert container["image"].split(":")[0] == service["image"].split(":")[0], name
        assert container.get("args") == service.get("command"), name
        assert container.get("command") == service.get("entrypoint"), name


def test_the_wiring_has_the_values_compose_gives_it(
    k8s_dev: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    for name, container in _containers(k8s_dev).items():
        ours = {k: str(v) for k, v in compose[name].get("environment", {}).items()}
        theirs = _environment(k8s_dev, container)
        for variable, value in theirs.items():
            if WIRING.match(variable) and variable in ours and variable not in DIFFERENT_ON_PURPOSE:
                assert value == ours[variable], (name, variable)
        missing = {v for v in ours if v.startswith("PAYSUITE_") and v not in theirs}
        assert missing == {v for (n, v) in COMPOSE_ONLY if n == name}, name


def test_every_variable_a_container_sets_itself_is_one_compose_sets(
    k8s_dev: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    # The shared ConfigMap may carry more (it is one for every pod); a container's own env
    # is what it was given on purpose, so compose must give the same service the same.
    for name, container in _containers(k8s_dev).items():
        own = {variable["name"] for variable in container.get("env", [])} - K8S_ONLY
        assert own - set(compose[name].get("environment", {})) == set(), name


def _listen_ports(environment: dict[str, str]) -> set[int]:
    ports = set()
    for variable, value in environment.items():
        if variable.endswith("_LISTEN"):
            ports.add(int(value.rsplit(":", 1)[1]))
        if variable in ("PAYSUITE_SIMULATOR_LISTEN_PORT", "PAYSUITE_METRICS_PORT"):
            ports.add(int(value))
    return ports


def test_container_ports_are_the_ports_each_process_listens_on(
    k8s: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    for name, container in _containers(k8s).items():
        declared = {port["containerPort"] for port in container.get("ports", [])}
        listening = _listen_ports(_environment(k8s, container))
        assert declared == listening, name
        published = {int(str(p).rsplit(":", 1)[1]) for p in compose[name].get("ports", [])}
        assert published <= declared, name


def test_every_probe_names_a_port_of_its_container(k8s: list[dict[str, Any]]) -> None:
    for name, container in _containers(k8s).items():
        ports = container.get("ports", [])
        known = {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind not in container:
                continue
            handler = next(h for h in ("grpc", "httpGet", "tcpSocket") if h in container[kind])
            assert container[kind][handler]["port"] in known, (name, kind)


def _calls_in_the_code() -> set[tuple[str, str, int]]:
    """Who calls whom: a process calls a service when its code reads that service's target
    setting (the webhook adapter's package is taken out of the gateway's)."""
    calls = set()
    for process, sources in PROCESS_SOURCES.items():
        for source in sources:
            for path in (ROOT / source).rglob("*.py"):
                text = path.read_text()
                for setting, callee in TARGET_SETTINGS.items():
                    if re.search(rf"settings\.{setting}\b", text):
                        calls.add((process, callee, SERVICE_PORTS[callee]))
    return calls


def test_the_network_policies_allow_exactly_the_calls_the_code_makes() -> None:
    # test_k8s.py asserts the policies allow CALLS and deny every other call between the
    # services; this ties CALLS to the code, so neither can change without the other.
    assert _calls_in_the_code() == set(CALLS)
