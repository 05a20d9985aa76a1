from common.metrics import OTHER, BoundedLabel, cached


def test_a_bounded_label_keeps_the_first_sane_values_then_says_other() -> None:
    label = BoundedLabel(limit=2)
    assert label("card_declined") == "card_declined"
    assert label("no spaces or <html> please") == OTHER
    assert label("insufficient_funds") == "insufficient_funds"
    assert label("expired_card") == OTHER
    assert label("card_declined") == "card_declined"


def test_cached_builds_once_per_key() -> None:
    built: list[str] = []

    def make(key: str) -> str:
        built.append(key)
        return key.upper()

    get = cached(make)
    assert [get("a"), get("a"), get("b")] == ["A", "A", "B"]
    assert built == ["a", "b"]
