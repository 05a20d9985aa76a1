"""The gateway's migrations and its SQLAlchemy tables describe the same schema."""

from __future__ import annotations

import pytest

from common.config import Settings
from gateway_service.adapters.tables import metadata
from gateway_service.bootstrap import DATABASE
from tests.integration.schema import schema_drift

pytestmark = pytest.mark.integration


def test_the_migrated_gateway_database_matches_the_table_metadata(migrated: Settings) -> None:
    assert schema_drift(DATABASE.url(migrated), metadata) == []
