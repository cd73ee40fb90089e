import pytest

from config.text import made_storable, storable


@pytest.mark.parametrize("text", ["", "kimi-k2", "Zürich ☕ 日本", "emoji 😀"])
def test_text_postgresql_stores_is_storable_and_kept_as_is(text: str) -> None:
    assert storable(text) is True
    assert made_storable(text) == text


@pytest.mark.parametrize(
    ("text", "made"),
    [("a\x00b", "ab"), ("a\ud800b", "a?b"), ("Zü\x00\udfffrich", "Zü?rich")],
)
def test_a_nul_or_an_unpaired_surrogate_is_not_storable_and_is_taken_out(
    text: str, made: str
) -> None:
    assert storable(text) is False
    assert made_storable(text) == made
    assert storable(made_storable(text)) is True
