"""Event-type patterns, as settings name the events a service publishes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.config import Settings
from common.events import event_type_patterns, matching


def test_patterns_are_comma_separated_shell_patterns_over_dotted_names() -> None:
    patterns = event_type_patterns(" account.credited , account.hold_*,")
    assert patterns == ("account.credited", "account.hold_*")
    wanted = matching(patterns)
    assert wanted("account.credited")
    assert wanted("account.hold_released")
    assert not wanted("account.debited")


def test_no_pattern_matches_nothing_and_a_star_everything() -> None:
    assert not matching(event_type_patterns(""))("account.credited")
    assert matching(event_type_patterns("*"))("account.credited")


@pytest.mark.parametrize("value", ["Account.Credited", "account credited", "account.[a]"])
def test_a_malformed_pattern_is_refused_when_settings_load(value: str) -> None:
    with pytest.raises(ValidationError, match="wallet_published_events"):
        Settings(wallet_published_events=value)
