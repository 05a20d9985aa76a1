"""FX rates: the rate a cross-currency transfer converts at is the latest one set."""

from __future__ import annotations

from datetime import datetime

from common.errors import FieldViolation, ValidationError, require
from common.money import validate_currency
from wallet_service.domain.fx import FxRate, parse_rate
from wallet_service.service_layer.mutations import Mutations


class Rates(Mutations):
    async def set_rate(
        self, *, base: str, quote: str, rate: str, source: str, as_of: datetime | None = None
    ) -> FxRate:
        validate_currency(base, field="base")
        validate_currency(quote, field="quote")
        if base == quote:
            raise ValidationError(FieldViolation("quote", "must differ from base"))
        require(source, "source")
        fx = FxRate(base, quote, parse_rate(rate), source, as_of or self._clock())
        async with self._uow() as uow:
            await uow.accounts.add_rate(fx)
            await uow.commit()
        return fx
