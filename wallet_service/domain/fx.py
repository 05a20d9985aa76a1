"""Currency conversion with exact rates and integer arithmetic.

A rate is an exact ratio `numerator / denominator` (entered as a decimal such as "0.9215", or
as "1/3"): one major unit of the base currency buys that many major units of the quote
currency. Converting `s` minor units of the base into the quote currency is

    target_minor = s * numerator * 10**exp(quote) / (denominator * 10**exp(base))

computed on integers and rounded half-to-even to the quote currency's minor unit. Half-even
(banker's rounding) does not drift in either direction over many conversions; the difference
between the exact and the rounded target stays in the FX liquidity accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from common.errors import FieldViolation, ValidationError
from common.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, Money
from wallet_service.domain.errors import ConversionTooSmall, LimitExceeded

_MAX_RATE_DIGITS = 30


def div_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator for numerator >= 0 and denominator > 0, ties to even."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


def parse_rate(text: str, *, field: str = "rate") -> Fraction:
    """An exact positive rate from "0.9215" or "1/3"; never via a float."""
    bad = ValidationError(FieldViolation(field, "must be a positive decimal like 0.9215 or 1/3"))
    if not text or len(text) > _MAX_RATE_DIGITS:
        raise bad
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            rate = Fraction(int(num), int(den))
        else:
            decimal = Decimal(text)
            if not decimal.is_finite():
                raise bad
            rate = Fraction(decimal)
    except (ValueError, ZeroDivisionError, InvalidOperation):
        raise bad from None
    if rate <= 0:
        raise bad
    return rate


def rate_text(rate: Fraction) -> str:
    """Exact decimal text when the rate has one (0.9215), otherwise the ratio (1/3)."""
    den = rate.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{rate.numerator}/{rate.denominator}"
    places = max(twos, fives)
    scaled = rate.numerator * 10**places // rate.denominator
    digits = str(scaled).rjust(places + 1, "0")
    return f"{digits[:-places]}.{digits[-places:]}" if places else digits


@dataclass(frozen=True, slots=True)
class FxRate:
    base: str
    quote: str
    rate: Fraction
    source: str
    as_of: datetime

    @property
    def text(self) -> str:
        return rate_text(self.rate)

    def convert(self, amount: Money) -> Money:
        """The quote-currency amount for `amount` of the base currency, half-even rounded."""
        exp_base = CURRENCY_EXPONENTS[self.base]
        exp_quote = CURRENCY_EXPONENTS[self.quote]
        target = div_half_even(
            amount.amount_minor * self.rate.numerator * 10**exp_quote,
            self.rate.denominator * 10**exp_base,
        )
        if target == 0:
            raise ConversionTooSmall(f"{amount} converts to nothing at {self.text} {self.quote}")
        if target > MAX_AMOUNT_MINOR:
            raise LimitExceeded(f"{amount} converts to more {self.quote} than an amount can hold")
        return Money(target, self.quote)


@dataclass(frozen=True, slots=True)
class Conversion:
    """What a cross-currency transfer did: the rate used and both sides of it."""

    rate: FxRate
    source: Money
    target: Money
