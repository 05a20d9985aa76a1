from datetime import UTC, datetime
from fractions import Fraction

import pytest

from common.errors import ValidationError
from common.money import Money
from wallet_service.domain import postings
from wallet_service.domain.account import Account, Limits
from wallet_service.domain.errors import ConversionTooSmall, FxRateUnavailable
from wallet_service.domain.fx import FxRate, div_half_even, parse_rate, rate_text
from wallet_service.domain.ledger import fx_account_id

AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def rate(base: str, quote: str, text: str) -> FxRate:
    return FxRate(base, quote, parse_rate(text), "test", AS_OF)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 2, 2), (7, 2, 4), (3, 2, 2), (1, 2, 0), (11, 4, 3), (9, 4, 2), (10, 5, 2)],
)
def test_half_even_division(numerator: int, denominator: int, expected: int) -> None:
    assert div_half_even(numerator, denominator) == expected


@pytest.mark.parametrize(
    ("base", "quote", "text", "amount", "expected"),
    [
        # USD (2) -> EUR (2): 10.00 * 0.9215 = 9.215 EUR = 921.5 cents, a tie -> even 922
        ("USD", "EUR", "0.9215", 1000, 922),
        # 0.05 USD * 0.9 = 0.045 EUR -> 4.5 cents, a tie, rounds to even 4
        ("USD", "EUR", "0.9", 5, 4),
        # 0.15 USD * 0.9 = 0.135 -> 13.5 cents -> even 14
        ("USD", "EUR", "0.9", 15, 14),
        # USD (2) -> JPY (0): 1.23 USD * 150.5 = 185.115 JPY -> 185
        ("USD", "JPY", "150.5", 123, 185),
        # 0.01 USD * 150 = 1.5 JPY, a tie -> 2 (even); 0.03 USD * 150 = 4.5 -> 4
        ("USD", "JPY", "150", 1, 2),
        ("USD", "JPY", "150", 3, 4),
        # JPY (0) -> USD (2): 1 JPY * 0.0065 = 0.0065 USD -> 0.65 cents -> 1 cent
        ("JPY", "USD", "0.0065", 1, 1),
        # 100 JPY * 0.00665 = 0.665 USD = 66.5 cents -> tie -> 66
        ("JPY", "USD", "0.00665", 100, 66),
        # USD (2) -> KWD (3): 1.00 USD * 0.3075 = 0.3075 KWD = 307.5 fils -> tie -> 308
        ("USD", "KWD", "0.3075", 100, 308),
        # KWD (3) -> JPY (0): 0.003 KWD * 500 = 1.5 JPY, a tie -> even 2
        ("KWD", "JPY", "500", 3, 2),
        # KWD (3) -> USD (2): 0.010 KWD * 3.25 = 0.0325 USD = 3.25 cents -> 3
        ("KWD", "USD", "3.25", 10, 3),
    ],
)
def test_conversion_rounds_half_even_to_the_target_exponent(
    base: str, quote: str, text: str, amount: int, expected: int
) -> None:
    assert rate(base, quote, text).convert(Money(amount, base)) == Money(expected, quote)


def test_a_conversion_to_nothing_is_refused() -> None:
    with pytest.raises(ConversionTooSmall):
        rate("KWD", "JPY", "500").convert(Money(1, "KWD"))  # 0.5 JPY -> even 0


def test_rates_are_exact_ratios_never_floats() -> None:
    assert parse_rate("0.9215") == Fraction(9215, 10000)
    assert parse_rate("1/3") == Fraction(1, 3)
    assert rate_text(Fraction(9215, 10000)) == "0.9215"
    assert rate_text(Fraction(150)) == "150"
    assert rate_text(Fraction(1, 3)) == "1/3"
    for bad in ("", "0", "-1", "abc", "1/0", "nan", "inf"):
        with pytest.raises(ValidationError):
            parse_rate(bad)


def test_a_cross_currency_transfer_passes_through_both_fx_accounts() -> None:
    source = Account.open(owner_id="a", currency="USD", open_ref="1")
    destination = Account.open(owner_id="b", currency="JPY", open_ref="2")
    limits = Limits()
    postings.credit(source, Money(1000, "USD"), operation_ref="c", limits=limits)
    txn = postings.transfer(
        source,
        destination,
        Money(123, "USD"),
        operation_ref="t",
        limits=limits,
        rate=rate("USD", "JPY", "150.5"),
    )
    assert txn.conversion is not None
    assert txn.conversion.target == Money(185, "JPY")
    assert txn.entry_for(fx_account_id("USD")).amount == Money(123, "USD")
    assert txn.entry_for(fx_account_id("JPY")).amount == Money(-185, "JPY")
    assert destination.total == Money(185, "JPY")


def test_a_transfer_without_a_rate_is_refused() -> None:
    source = Account.open(owner_id="a", currency="USD", open_ref="1")
    postings.credit(source, Money(1000, "USD"), operation_ref="c", limits=Limits())
    destination = Account.open(owner_id="b", currency="EUR", open_ref="2")
    with pytest.raises(FxRateUnavailable):
        postings.transfer(source, destination, Money(1, "USD"), operation_ref="t", limits=Limits())
    assert source.total == Money(1000, "USD")
