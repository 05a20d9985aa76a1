"""The wallet's migrations and its SQLAlchemy tables describe the same schema."""

from __future__ import annotations

import pytest

from common.config import Settings
from tests.integration.schema import schema_drift
from wallet_service.adapters.tables import metadata
from wallet_service.bootstrap import DATABASE

pytestmark = pytest.mark.integration


def test_the_migrated_wallet_database_matches_the_table_metadata(migrated: Settings) -> None:
    assert schema_drift(DATABASE.url(migrated), metadata) == []
