"""Amounts: decimal strings at the edges, exact integer base units inside, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.amounts import MAX_UINT256, format_amount, parse_amount
from pipeline.errors import InvalidAmount, InvalidInput


@pytest.mark.parametrize(
    ("text", "decimals", "base_units"),
    [
        ("1", 18, 10**18),
        ("1.5", 6, 1_500_000),
        ("0.000001", 6, 1),
        ("123456789.123456", 6, 123_456_789_123_456),
        ("1.500000", 6, 1_500_000),  # trailing zeros beyond nothing significant are fine
        ("1.50000000000", 6, 1_500_000),  # ...even more of them than the token has decimals
        ("7", 0, 7),
        ("7.000", 0, 7),
        ("0.1", 1, 1),
        (" 2.5 ", 6, 2_500_000),  # surrounding whitespace is stripped
    ],
)
def test_given_a_plain_decimal_string_when_parsed_then_exact_base_units(text: str, decimals: int, base_units: int) -> None:
    assert parse_amount(text, decimals) == base_units


def test_given_a_finite_decimal_object_when_parsed_then_it_is_accepted_like_its_string() -> None:
    assert parse_amount(Decimal("1.25"), 6) == 1_250_000
    assert parse_amount(Decimal("1.2500"), 2) == 125


@pytest.mark.parametrize(("text", "decimals"), [("0.0000001", 6), ("1.1", 0), ("0.1234567", 6), ("1.0000000000000000001", 18)])
def test_given_more_decimal_places_than_the_token_when_parsed_then_invalid_amount(text: str, decimals: int) -> None:
    with pytest.raises(InvalidAmount, match="decimal places"):
        parse_amount(text, decimals)


@pytest.mark.parametrize("text", ["0", "0.0", "0.000000", "-1", "-0.5", "+1"])
def test_given_zero_or_a_signed_amount_when_parsed_then_invalid_amount(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, 6)


@pytest.mark.parametrize("value", [Decimal("0"), Decimal("-1.5"), Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_given_a_non_positive_or_non_finite_decimal_when_parsed_then_invalid_amount(value: Decimal) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value, 6)


@pytest.mark.parametrize("value", [1.5, 1.0, 0.1, float("nan"), float("inf"), True, False, 1, 10**6, None, b"1", ["1"], {"amount": "1"}])
def test_given_a_non_string_value_when_parsed_then_invalid_amount(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value, 6)


@pytest.mark.parametrize(
    "text",
    ["1e6", "1E6", "1.5e-3", "1e+2", ".5", "5.", "01", "00.1", "1,000", "1_000", "0x10", "", "   ", "abc",
     "1.2.3", "inf", "NaN", "١", "1 000", "1.5\n2"],
)
def test_given_text_that_is_not_a_plain_decimal_when_parsed_then_invalid_amount(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(text, 6)


def test_invalid_amount_is_an_invalid_input_and_a_value_error() -> None:
    # The API maps InvalidInput to a 400; callers catching ValueError keep working.
    assert issubclass(InvalidAmount, InvalidInput)
    assert issubclass(InvalidAmount, ValueError)
    assert InvalidAmount.transient is False


def test_given_exactly_uint256_max_base_units_when_parsed_then_accepted() -> None:
    assert parse_amount(str(MAX_UINT256), 0) == MAX_UINT256
    assert parse_amount(format_amount(MAX_UINT256, 18), 18) == MAX_UINT256


def test_given_one_more_than_uint256_max_when_parsed_then_invalid_amount() -> None:
    with pytest.raises(InvalidAmount, match="uint256"):
        parse_amount(str(MAX_UINT256 + 1), 0)
    with pytest.raises(InvalidAmount, match="uint256"):
        parse_amount(str(10**60), 18)  # 10**78 base units


@pytest.mark.parametrize("value", ["9" * 5000, Decimal("1E+5000")])
def test_given_an_absurdly_long_number_when_parsed_then_invalid_amount(value: object) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(value, 6)


def test_an_error_message_does_not_echo_a_huge_input() -> None:
    with pytest.raises(InvalidAmount) as info:
        parse_amount("x" * 10_000, 6)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("base_units", "decimals", "text"),
    [(1_500_000, 6, "1.5"), (0, 6, "0"), (1, 6, "0.000001"), (10**18, 18, "1"), (7, 0, "7"), (-1_500_000, 6, "-1.5"),
     (123_000, 3, "123")],
)
def test_format_amount_gives_the_shortest_exact_decimal(base_units: int, decimals: int, text: str) -> None:
    assert format_amount(base_units, decimals) == text


@given(base_units=st.integers(min_value=1, max_value=MAX_UINT256), decimals=st.integers(min_value=0, max_value=36))
def test_property_format_then_parse_returns_the_same_base_units(base_units: int, decimals: int) -> None:
    assert parse_amount(format_amount(base_units, decimals), decimals) == base_units


@given(
    whole=st.integers(min_value=0, max_value=10**30),
    fraction=st.text(alphabet="0123456789", max_size=6),
    zeros=st.integers(min_value=0, max_value=5),
)
def test_property_parse_then_format_gives_the_canonical_text(whole: int, fraction: str, zeros: int) -> None:
    text = f"{whole}.{fraction}{'0' * zeros}" if fraction or zeros else str(whole)
    expected = whole * 10**6 + int(fraction.ljust(6, "0") or "0")  # exact integer arithmetic
    if expected == 0:
        with pytest.raises(InvalidAmount):
            parse_amount(text, 6)
        return
    assert parse_amount(text, 6) == expected
    significant = fraction.rstrip("0")
    assert format_amount(expected, 6) == (f"{whole}.{significant}" if significant else str(whole))
