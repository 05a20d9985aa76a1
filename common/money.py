"""Money as an exact integer count of minor units plus an ISO 4217 code. No floats, ever."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import FieldViolation, ValidationError

# ISO 4217 minor-unit exponents for the currencies we accept. A currency missing here is
# rejected rather than guessed: a wrong exponent silently moves money by a factor of 10.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "HUF": 2, "INR": 2, "MXN": 2, "NOK": 2, "NZD": 2, "PLN": 2,
    "SEK": 2, "SGD": 2, "USD": 2, "ZAR": 2,
    "JPY": 0, "KRW": 0, "CLP": 0, "ISK": 0, "VND": 0,
    "BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

# Bigint columns and int64 protobuf fields: refuse what would not round-trip.
MAX_AMOUNT_MINOR = 2**63 - 1


def validate_currency(code: str, *, field: str = "currency") -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValidationError(
            FieldViolation(field, f"unknown or unsupported ISO 4217 currency code {code!r}")
        )
    return code


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise TypeError("Money.amount_minor must be an int")
        if abs(self.amount_minor) > MAX_AMOUNT_MINOR:
            raise ValueError("Money.amount_minor out of range")
        validate_currency(self.currency)

    @classmethod
    def positive(cls, amount_minor: int, currency: str, *, field: str = "amount") -> Money:
        """Parses a request amount: a positive amount in a supported currency."""
        violations = []
        if currency not in CURRENCY_EXPONENTS:
            violations.append(
                FieldViolation(
                    f"{field}.currency",
                    f"unknown or unsupported ISO 4217 currency code {currency!r}",
                )
            )
        if amount_minor <= 0:
            violations.append(
                FieldViolation(f"{field}.amount_minor", "must be a positive number of minor units")
            )
        elif amount_minor > MAX_AMOUNT_MINOR:
            violations.append(FieldViolation(f"{field}.amount_minor", "is too large"))
        if violations:
            raise ValidationError(*violations)
        return cls(amount_minor, currency)

    @property
    def exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} with {other.currency}")

    def format(self) -> str:
        """Human text, e.g. "12.50 USD"; exact because it works on digits, not floats."""
        sign = "-" if self.amount_minor < 0 else ""
        digits = str(abs(self.amount_minor)).rjust(self.exponent + 1, "0")
        if self.exponent == 0:
            return f"{sign}{digits} {self.currency}"
        whole, frac = digits[: -self.exponent], digits[-self.exponent :]
        return f"{sign}{whole}.{frac} {self.currency}"

    def __str__(self) -> str:
        return self.format()
