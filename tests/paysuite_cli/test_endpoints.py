"""`paysuite up` publishes where its wallet replicas are; every command finds them there."""

from __future__ import annotations

import json
from pathlib import Path

from common.config import ENDPOINTS_FILE, Settings
from paysuite_cli import endpoints


def test_a_command_reaches_every_wallet_replica_the_suite_published(tmp_path: Path) -> None:
    (tmp_path / ENDPOINTS_FILE).write_text(json.dumps({"database_url": "postgresql://db"}))
    settings = Settings(data_dir=tmp_path)
    target = "ipv4:127.0.0.1:50052,127.0.0.1:20001"

    with endpoints.published(tmp_path, settings, wallet_target=target):
        found = endpoints.locate(Settings(data_dir=tmp_path))
        assert found.wallet_target == target
        assert found.payment_target == settings.payment_listen

    assert not (tmp_path / ENDPOINTS_FILE).exists()


def test_with_one_wallet_its_listen_address_is_published(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, wallet_listen="127.0.0.1:40000")

    with endpoints.published(tmp_path, settings):
        assert endpoints.locate(Settings(data_dir=tmp_path)).wallet_target == "127.0.0.1:40000"
