"""The suite's logs copied out of its throw-away folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from chaos.suite import ChaosSuite
from common.config import Settings


def _suite(log_folder: Path | None) -> ChaosSuite:
    return ChaosSuite(Settings(), {}, None, {}, [], log_folder=log_folder)


def test_every_child_s_log_is_copied(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "logs"
    folder.mkdir(parents=True)
    (folder / "payment.log").write_text("payment line\n")
    (folder / "wallet.log").write_text("wallet line\n")

    kept = _suite(folder).keep_logs(tmp_path / "results" / "run-logs")

    assert kept == tmp_path / "results" / "run-logs"
    assert sorted(p.name for p in kept.iterdir()) == ["payment.log", "wallet.log"]
    assert (kept / "payment.log").read_text() == "payment line\n"


def test_nothing_to_copy_makes_no_folder(tmp_path: Path) -> None:
    assert _suite(None).keep_logs(tmp_path / "kept") is None
    assert _suite(tmp_path).keep_logs(tmp_path / "kept") is None
    assert not (tmp_path / "kept").exists()


def test_a_log_that_cannot_be_read_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "payment.log").write_text("payment line\n")
    (folder / "postgres.log").write_text("another user's\n")
    copy = shutil.copyfile

    def copyfile(source: Path, target: Path) -> Path:
        if source.name == "postgres.log":
            raise PermissionError(13, "Permission denied", str(source))
        return copy(source, target)

    monkeypatch.setattr(shutil, "copyfile", copyfile)

    kept = _suite(folder).keep_logs(tmp_path / "kept")

    assert kept is not None
    assert [p.name for p in kept.iterdir()] == ["payment.log"]
