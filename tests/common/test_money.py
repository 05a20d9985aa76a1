import pytest

from common.errors import ValidationError
from common.money import Money


def test_money_is_exact_integer_minor_units() -> None:
    total = Money(10, "USD") + Money(20, "USD")
    assert total == Money(30, "USD")
    assert total.format() == "0.30 USD"


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (1250, "USD", "12.50 USD"),
        (5, "USD", "0.05 USD"),
        (-5, "EUR", "-0.05 EUR"),
        (1000, "JPY", "1000 JPY"),
        (1234, "KWD", "1.234 KWD"),
    ],
)
def test_format_uses_the_currency_exponent(amount: int, currency: str, text: str) -> None:
    assert Money(amount, currency).format() == text


def test_float_amounts_are_refused() -> None:
    with pytest.raises(TypeError):
        Money(1.5, "USD")  # type: ignore[arg-type]  # the float is the point: Money refuses it at run time


def test_currencies_do_not_mix() -> None:
    with pytest.raises(ValueError, match="cannot combine"):
        _ = Money(1, "USD") + Money(1, "EUR")


def test_unknown_currency_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as caught:
        Money(1, "XYZ")
    assert caught.value.violations[0].field == "currency"


@pytest.mark.parametrize("amount", [0, -1])
def test_request_amount_must_be_positive(amount: int) -> None:
    with pytest.raises(ValidationError) as caught:
        Money.positive(amount, "USD")
    assert [v.field for v in caught.value.violations] == ["amount.amount_minor"]


def test_request_amount_reports_every_bad_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Money.positive(0, "usd")
    assert {v.field for v in caught.value.violations} == {
        "amount.amount_minor",
        "amount.currency",
    }
