from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from provider_simulator.settings import (
    DEVELOPMENT_WEBHOOK_SECRET,
    SettingsError,
    SimulatorSettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "PAYSUITE_WEBHOOK_SECRET",
        "PAYSUITE_SIMULATOR_LISTEN_HOST",
        "PAYSUITE_SIMULATOR_LISTEN_PORT",
        "PAYSUITE_SIMULATOR_WEBHOOK_URL",
        "PAYSUITE_SIMULATOR_SETTLE_DELAY_MS",
        "PAYSUITE_SIMULATOR_WEBHOOK_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = SimulatorSettings()

    assert settings.listen_host == "127.0.0.1"
    assert settings.listen_port == 8090
    assert settings.webhook_url == "http://127.0.0.1:8080/webhooks/sim-primary"
    assert settings.name == "sim-primary"
    assert settings.signature_format == "standard"
    assert settings.settle_delay_ms == 300
    assert settings.webhook_max_attempts == 8
    assert settings.webhook_secret.get_secret_value() == DEVELOPMENT_WEBHOOK_SECRET
    assert settings.uses_development_secret
    assert (
        "whsec_" + base64.b64encode(b"paysuite-development-webhook-secret").decode()
        == DEVELOPMENT_WEBHOOK_SECRET
    )


def test_reads_prefixed_variables_and_the_shared_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYSUITE_SIMULATOR_LISTEN_PORT", "9999")
    monkeypatch.setenv("PAYSUITE_SIMULATOR_SETTLE_DELAY_MS", "0")
    monkeypatch.setenv("PAYSUITE_WEBHOOK_SECRET", "whsec_c2VjcmV0")
    # Neither the unprefixed name nor a simulator-prefixed one is the secret's variable.
    monkeypatch.setenv("PAYSUITE_SIMULATOR_WEBHOOK_SECRET", "whsec_aWdub3JlZA==")

    settings = load_settings()

    assert (settings.listen_port, settings.settle_delay_ms) == (9999, 0)
    assert settings.webhook_secret.get_secret_value() == "whsec_c2VjcmV0"
    assert not settings.uses_development_secret


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAYSUITE_SIMULATOR_SETTLE_DELAY_MS", "-1"),
        ("PAYSUITE_SIMULATOR_LISTEN_PORT", "70000"),
        ("PAYSUITE_SIMULATOR_WEBHOOK_MAX_ATTEMPTS", "0"),
        ("PAYSUITE_SIMULATOR_WEBHOOK_URL", "ftp://example.com/hook"),
        ("PAYSUITE_SIMULATOR_WEBHOOK_URL", "not a url"),
        ("PAYSUITE_WEBHOOK_SECRET", "whsec_not*base64!"),
        ("PAYSUITE_WEBHOOK_SECRET", "whsec_"),
    ],
)
def test_bad_values_name_the_variable_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    assert f"  {variable}: " in message
    assert value not in message.replace(variable, "")


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValidationError):
        SimulatorSettings(settle_delay_ms=-5)
