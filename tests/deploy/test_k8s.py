"""Every k8s overlay, rendered with kustomize and checked offline:

- every object against the Kubernetes API schemas that kubernetes-validate ships (strict: an
  unknown field fails), for the oldest Kubernetes the manifests support (1.27, native gRPC
  probes) and the newest the package knows;
- the platform rules: a ServiceAccount per workload with no token, no Secret rendered,
  Prometheus annotations and PAYSUITE_METRICS_PORT on every paysuite pod, HPAs for the stateless
  services, a PDB for every workload that can run more than one replica;
- the NetworkPolicies, by asking who may connect to whom: exactly the calls design.md needs.

Rendering needs `kustomize` or `kubectl` (whose built-in kustomize is the same code). Without
either the render tests are skipped on a developer's machine, but fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings
from common.grpc.server import LIVENESS
from tests.deploy.netpol import Endpoint, allowed
from tests.deploy.worker_env import POD_NAME, worker_starts

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")


K8S = Path(__file__).resolve().parents[2] / "k8s"
OVERLAYS = ("dev", "prod")
OLDEST_SUPPORTED = "1.27"
STATELESS = {"payment", "wallet", "gateway", "webhook-adapter"}
PAYSUITE_IMAGE = "ghcr.io/paysuite/paysuite"
WORKLOAD_KINDS = {"Deployment", "Job"}
# Every gRPC workload: the setting it listens on and its port. The recovery worker's server
# serves only health, but it is probed like the services'.
GRPC_WORKLOADS = {
    "payment": ("PAYSUITE_PAYMENT_LISTEN", 50051),
    "wallet": ("PAYSUITE_WALLET_LISTEN", 50052),
    "gateway": ("PAYSUITE_GATEWAY_LISTEN", 50053),
    "recovery-worker": ("PAYSUITE_RECOVERY_LISTEN", 50054),
}
SIMULATORS = frozenset({"provider-simulator", "provider-simulator-secondary"})
# Workloads that have a database (and so the database-url Secret key and PostgreSQL egress).
WITH_DATABASE = frozenset({"payment", "wallet", "gateway", "webhook-adapter", "migrate"})
# Read by every process but not (yet) a field of common.config.Settings.
NOT_IN_SETTINGS = frozenset({"PAYSUITE_METRICS_PORT"})


def _kustomize_command() -> list[str]:
    if binary := shutil.which("kustomize"):
        return [binary, "build"]
    if binary := shutil.which("kubectl"):
        return [binary, "kustomize"]
    if os.environ.get("CI"):
        pytest.fail("neither kustomize nor kubectl is installed: CI must render k8s/")
    pytest.skip("neither kustomize nor kubectl is installed")


def _render(overlay: str) -> list[dict[str, Any]]:
    command = [*_kustomize_command(), str(K8S / "overlays" / overlay)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(request.param)


def _of_kind(objects: list[dict[str, Any]], *kinds: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] in kinds}


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def _paysuite_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in _pod_spec(workload)["containers"] if c["image"].startswith(PAYSUITE_IMAGE)]


# --- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [OLDEST_SUPPORTED, "latest"])
def test_every_object_is_valid_for_kubernetes(
    rendered: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    _, objects = rendered
    if version == "latest":
        version = kubernetes_validate.latest_version()
    errors = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    assert errors == []


def test_the_new_kinds_are_rendered(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    versions = {(o["apiVersion"], o["kind"]) for o in objects}
    assert {
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("v1", "ServiceAccount"),
    } <= versions


def test_everything_lands_in_the_overlays_namespace(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    (namespace,) = _of_kind(objects, "Namespace")
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        namespace
    }


# --- platform rules ------------------------------------------------------------------------


def test_no_secret_is_rendered(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"] == []
    for workload in _of_kind(objects, *WORKLOAD_KINDS).values():
        for container in _pod_spec(workload)["containers"]:
            for env in container.get("env", []):
                assert "SECRET" not in env["name"] or "valueFrom" in env, env


def test_every_workload_has_its_own_service_account_without_a_token(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    accounts = _of_kind(objects, "ServiceAccount")
    workloads = _of_kind(objects, *WORKLOAD_KINDS)
    used = [_pod_spec(w).get("serviceAccountName") for w in workloads.values()]
    assert sorted(used) == sorted(workloads)  # one each, named after its workload
    assert set(accounts) == set(used)
    assert all(a["automountServiceAccountToken"] is False for a in accounts.values())
    assert all(_pod_spec(w)["automountServiceAccountToken"] is False for w in workloads.values())


def test_every_paysuite_pod_serves_metrics_and_is_annotated_for_prometheus(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    for name, deployment in _of_kind(objects, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9100",
            "prometheus.io/path": "/metrics",
        }, name
        for container in _paysuite_containers(deployment):
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("PAYSUITE_METRICS_PORT") == "9100", name
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports.get("metrics") == 9100, name


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    """The paysuite-config ConfigMap's data (its name carries a content hash)."""
    (config,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("paysuite-config")
    ]
    data: dict[str, str] = config["data"]
    return data


def _environment(container: dict[str, Any], config: dict[str, str]) -> dict[str, Any]:
    """What the process sees: the ConfigMap (envFrom) overlaid by `env` (value or valueFrom)."""
    sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
    assert all(name.startswith("paysuite-config") for name in sources), sources
    env: dict[str, Any] = dict(config) if sources else {}
    env.update({e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])})
    return env


def test_the_recovery_worker_is_a_long_running_deployment(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    worker = _of_kind(objects, "Deployment")["recovery-worker"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["recovery_worker"]
    assert worker["spec"]["replicas"] == 1
    assert "recovery-worker" not in _of_kind(objects, "Service")  # nothing calls it


def test_every_grpc_workload_listens_on_its_port_and_is_probed_there(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    deployments = _of_kind(objects, "Deployment")
    for name, (setting, port) in GRPC_WORKLOADS.items():
        (container,) = _paysuite_containers(deployments[name])
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env.get(setting) == f"0.0.0.0:{port}", name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("grpc") == port, name
        # Readiness asks the default service "" (NOT_SERVING while a dependency is down);
        # startup and liveness ask the name ServiceRuntime keeps SERVING while the process runs.
        readiness = container["readinessProbe"]["grpc"]
        assert readiness["port"] == port, name
        assert readiness.get("service", "") == "", name
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port, "service": LIVENESS}, (name, probe)


def test_the_recovery_worker_gets_redis_and_the_services_but_no_database(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    config = _config(objects)
    services = _of_kind(objects, "Service")
    (container,) = _paysuite_containers(_of_kind(objects, "Deployment")["recovery-worker"])
    env = _environment(container, config)
    assert env["PAYSUITE_REDIS_URL"].startswith("redis://")
    for setting, callee in (
        ("PAYSUITE_PAYMENT_TARGET", "payment"),
        ("PAYSUITE_WALLET_TARGET", "wallet"),
        ("PAYSUITE_GATEWAY_TARGET", "gateway"),
    ):
        port = GRPC_WORKLOADS[callee][1]
        assert env[setting] == f"dns:///{callee}:{port}", setting
        assert [p["port"] for p in services[callee]["spec"]["ports"]] == [port], callee
    # It owns no data: no database URL, and of paysuite-secrets only the token-signing key.
    assert "PAYSUITE_DATABASE_URL" not in env
    secrets = [
        e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert secrets == ["PAYSUITE_AUTH_SECRET"]


def test_grpc_callers_balance_calls_over_every_pod_of_a_service(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """A ClusterIP balances connections and a gRPC caller keeps one: with it, each caller's
    calls would all go to one replica. Headless Services give callers every pod; their
    channels balance calls round robin (common/grpc/client.py) and the servers' connection
    age makes them resolve again, so pods an HPA adds get calls within minutes."""
    _, objects = rendered
    config = _config(objects)
    services = _of_kind(objects, "Service")
    for callee in ("payment", "wallet", "gateway"):
        assert services[callee]["spec"]["clusterIP"] == "None", callee
    for name, deployment in _of_kind(objects, "Deployment").items():
        for container in _paysuite_containers(deployment):
            env = _environment(container, config)
            for setting in ("PAYSUITE_PAYMENT_TARGET", "PAYSUITE_WALLET_TARGET"):
                if setting in env:
                    assert env[setting].startswith("dns:///"), (name, setting)
            if name in ("payment", "wallet", "gateway"):
                assert 0 < int(env["PAYSUITE_GRPC_MAX_CONNECTION_AGE_S"]) <= 600, name


async def test_the_recovery_worker_starts_with_the_settings_it_is_given(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, objects = rendered
    (container,) = _paysuite_containers(_of_kind(objects, "Deployment")["recovery-worker"])
    env = _environment(container, _config(objects))
    settings = await worker_starts(env, monkeypatch, tmp_path)
    assert settings.payment_target == "dns:///payment:50051"
    # Its leases' owner: the pod's name, kept when its container restarts.
    assert settings.replica_name == POD_NAME


def test_only_the_workloads_with_a_database_read_its_url(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    for name, workload in _of_kind(objects, *WORKLOAD_KINDS).items():
        for container in _paysuite_containers(workload):
            names = {e["name"] for e in container.get("env", [])}
            assert ("PAYSUITE_DATABASE_URL" in names) == (name in WITH_DATABASE), name


def test_every_paysuite_setting_the_manifests_set_exists(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    # A misspelt PAYSUITE_* name is silently ignored (extra="ignore"): catch it here.
    _, objects = rendered
    known = {f"PAYSUITE_{field.upper()}" for field in Settings.model_fields} | NOT_IN_SETTINGS
    config = _config(objects)
    for name, workload in _of_kind(objects, *WORKLOAD_KINDS).items():
        if name in SIMULATORS:  # provider_simulator reads its own PAYSUITE_SIMULATOR_*
            continue
        for container in _paysuite_containers(workload):
            env = _environment(container, config)
            assert {k for k in env if k.startswith("PAYSUITE_")} - known == set(), name


def test_the_stateless_services_are_autoscaled(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    autoscalers = _of_kind(objects, "HorizontalPodAutoscaler")
    deployments = _of_kind(objects, "Deployment")
    assert set(autoscalers) == STATELESS
    for name, hpa in autoscalers.items():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # The HPA alone owns the count, and utilisation needs a CPU request to measure against.
        assert "replicas" not in deployments[name]["spec"], name
        for container in _pod_spec(deployments[name])["containers"]:
            assert container["resources"]["requests"]["cpu"], name


def test_prod_runs_at_least_three_of_each_grpc_service(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, objects = rendered
    if overlay != "prod":
        pytest.skip("prod sizing only")
    autoscalers = _of_kind(objects, "HorizontalPodAutoscaler")
    assert {n: autoscalers[n]["spec"]["minReplicas"] for n in ("payment", "wallet", "gateway")} == {
        "payment": 3,
        "wallet": 3,
        "gateway": 3,
    }


def test_every_workload_that_can_run_twice_has_a_disruption_budget(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    autoscalers = _of_kind(objects, "HorizontalPodAutoscaler")
    budgets = _of_kind(objects, "PodDisruptionBudget").values()
    for name, deployment in _of_kind(objects, "Deployment").items():
        most = autoscalers[name]["spec"]["maxReplicas"] if name in autoscalers else 0
        most = max(most, deployment["spec"].get("replicas", 1))
        if most < 2:
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if all(labels.get(k) == v for k, v in _selector(b).items())]
        assert len(covering) == 1, name
        assert covering[0]["spec"]["maxUnavailable"] == 1, name


def _selector(budget: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = budget["spec"]["selector"]["matchLabels"]
    return labels


# --- network policies ----------------------------------------------------------------------

INTERNET = Endpoint(address="203.0.113.10")  # TEST-NET-3: "somewhere on the internet"
PROVIDER = INTERNET
CLUSTER_PRIVATE = Endpoint(address="10.1.2.3")
CLOUD_METADATA = Endpoint(address="169.254.169.254")
PROMETHEUS = Endpoint(
    namespace="monitoring",
    labels={"app.kubernetes.io/name": "prometheus"},
    namespace_labels={"kubernetes.io/metadata.name": "monitoring"},
)
DNS = Endpoint(
    namespace="kube-system",
    labels={"k8s-app": "kube-dns"},
    namespace_labels={"kubernetes.io/metadata.name": "kube-system"},
)
CLIENT = Endpoint(
    namespace="orders",
    labels={"app": "orders"},
    namespace_labels={"kubernetes.io/metadata.name": "orders", "paysuite.io/client": "true"},
)
STRANGER = Endpoint(
    namespace="other",
    labels={"app": "other"},
    namespace_labels={"kubernetes.io/metadata.name": "other"},
)


def _in_cluster_datastore(kind: str) -> Endpoint:
    return Endpoint(
        namespace="data",
        labels={"paysuite.io/datastore": kind},
        namespace_labels={"kubernetes.io/metadata.name": "data"},
    )


@pytest.fixture(scope="module")
def network(
    rendered: tuple[str, list[dict[str, Any]]],
) -> tuple[str, list[dict[str, Any]], dict[str, Endpoint]]:
    overlay, objects = rendered
    (namespace,) = _of_kind(objects, "Namespace").values()
    name = namespace["metadata"]["name"]
    namespace_labels = {
        **namespace["metadata"].get("labels", {}),
        "kubernetes.io/metadata.name": name,
    }
    pods = {
        workload_name: Endpoint(
            namespace=name,
            labels=workload["spec"]["template"]["metadata"]["labels"],
            namespace_labels=namespace_labels,
        )
        for workload_name, workload in _of_kind(objects, *WORKLOAD_KINDS).items()
    }
    return overlay, list(_of_kind(objects, "NetworkPolicy").values()), pods


Network = tuple[str, list[dict[str, Any]], dict[str, Endpoint]]

CALLS = [
    ("payment", "wallet", 50052),
    ("payment", "gateway", 50053),
    ("webhook-adapter", "gateway", 50053),
    ("webhook-adapter", "payment", 50051),
    ("recovery-worker", "payment", 50051),
    ("recovery-worker", "wallet", 50052),
    ("recovery-worker", "gateway", 50053),
]


def test_the_calls_the_design_needs_are_allowed(network: Network) -> None:
    _, policies, pods = network
    for source, destination, port in CALLS:
        assert allowed(policies, pods[source], pods[destination], port), (source, destination)


# Every port a pod listens on for others (the recovery worker's: health, for the kubelet only).
SERVICE_PORTS = {
    "payment": 50051,
    "wallet": 50052,
    "gateway": 50053,
    "webhook-adapter": 8080,
    "recovery-worker": 50054,
}


def test_every_other_call_between_services_is_denied(network: Network) -> None:
    _, policies, pods = network
    for source in pods:
        for destination, port in SERVICE_PORTS.items():
            if source == destination:
                continue
            if destination == "webhook-adapter":
                # Its ingress is open (it is the edge), so the caller's egress decides: inside
                # the suite only the simulators post to it.
                expected = source.startswith("provider-simulator")
            else:
                expected = (source, destination, port) in CALLS
            actual = allowed(policies, pods[source], pods[destination], port)
            assert actual == expected, (source, destination, port)


def test_every_pod_resolves_names_and_is_scraped_by_prometheus(network: Network) -> None:
    _, policies, pods = network
    for name, pod in pods.items():
        assert allowed(policies, pod, DNS, 53, "UDP"), name
        assert allowed(policies, pod, DNS, 53, "TCP"), name
        assert allowed(policies, PROMETHEUS, pod, 9100), name
        assert not allowed(policies, STRANGER, pod, 9100), name


def test_the_processes_reach_postgres_and_redis_only_where_configured(network: Network) -> None:
    overlay, policies, pods = network
    if overlay == "prod":  # managed services by address (placeholders in TEST-NET-1)
        postgres, redis = Endpoint(address="192.0.2.10"), Endpoint(address="192.0.2.20")
        assert not allowed(policies, pods["payment"], _in_cluster_datastore("postgresql"), 5432)
    else:  # labelled pods in the cluster
        postgres, redis = _in_cluster_datastore("postgresql"), _in_cluster_datastore("redis")
    for name, pod in pods.items():
        # The recovery worker has no database: Redis (its leases, the streams) only.
        assert allowed(policies, pod, postgres, 5432) == (name in WITH_DATABASE), name
        assert allowed(policies, pod, redis, 6379) == (name not in SIMULATORS), name
        assert not allowed(policies, pod, redis, 5432), name
        assert not allowed(policies, pod, postgres, 6379), name


def test_the_recovery_worker_reaches_what_it_needs_and_nobody_reaches_its_health_port(
    network: Network,
) -> None:
    _, policies, pods = network
    worker = pods["recovery-worker"]
    for callee in ("payment", "wallet", "gateway"):
        assert allowed(policies, worker, pods[callee], SERVICE_PORTS[callee]), callee
    assert allowed(policies, worker, DNS, 53, "UDP")
    assert allowed(policies, PROMETHEUS, worker, 9100)
    # Health on 50054 is for the kubelet, which probes from the pod's node: NetworkPolicy
    # always allows that, so no rule may open the port to anyone else.
    for name, peer in {
        **pods,
        "prometheus": PROMETHEUS,
        "client": CLIENT,
        "stranger": STRANGER,
        "internet": INTERNET,
    }.items():
        assert not allowed(policies, peer, worker, 50054), name


def test_only_the_gateway_reaches_the_provider_and_never_private_ranges(
    network: Network,
) -> None:
    _, policies, pods = network
    for name, pod in pods.items():
        assert allowed(policies, pod, PROVIDER, 443) == (name == "gateway"), name
        assert not allowed(policies, pod, CLUSTER_PRIVATE, 443), name
        assert not allowed(policies, pod, CLOUD_METADATA, 80), name


def test_the_edge_and_the_clients_get_in_and_strangers_do_not(network: Network) -> None:
    _, policies, pods = network
    assert allowed(policies, INTERNET, pods["webhook-adapter"], 8080)
    assert allowed(policies, CLIENT, pods["payment"], 50051)
    assert allowed(policies, CLIENT, pods["wallet"], 50052)
    assert not allowed(policies, CLIENT, pods["gateway"], 50053)
    for name in ("payment", "wallet", "gateway"):
        assert not allowed(policies, STRANGER, pods[name], SERVICE_PORTS[name]), name
    assert not allowed(policies, INTERNET, pods["gateway"], 50053)


def test_in_dev_the_simulators_play_the_provider(network: Network) -> None:
    overlay, policies, pods = network
    if overlay != "dev":
        pytest.skip("the simulators run in dev only")
    assert allowed(policies, pods["gateway"], pods["provider-simulator"], 8090)
    assert allowed(policies, pods["gateway"], pods["provider-simulator-secondary"], 8091)
    for simulator in ("provider-simulator", "provider-simulator-secondary"):
        assert allowed(policies, pods[simulator], pods["webhook-adapter"], 8080)
        assert not allowed(policies, pods["payment"], pods[simulator], 8090)
        assert not allowed(policies, pods[simulator], pods["gateway"], 50053)
