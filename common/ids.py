"""Identifiers. Random UUIDs: unguessable and safe to generate on any replica."""

from __future__ import annotations

import uuid

from common.errors import FieldViolation, ValidationError


def new_id() -> str:
    return str(uuid.uuid4())


def parse_id(value: str, field: str) -> str:
    """Validates a UUID-shaped identifier from a request, so a typo is INVALID_ARGUMENT."""
    if not value:
        raise ValidationError(FieldViolation(field, "is required"))
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError(FieldViolation(field, "must be a UUID")) from None
