"""The payment service's migrations and its SQLAlchemy tables describe the same schema."""

from __future__ import annotations

import pytest

from common.config import Settings
from payment_service.adapters.tables import metadata
from payment_service.bootstrap import DATABASE
from tests.integration.schema import schema_drift

pytestmark = pytest.mark.integration


def test_the_migrated_payments_database_matches_the_table_metadata(migrated: Settings) -> None:
    assert schema_drift(DATABASE.url(migrated), metadata) == []
