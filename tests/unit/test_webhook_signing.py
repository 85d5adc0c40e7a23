"""Webhook signatures: what the dispatcher sends verifies, and anything altered, stale or missing
is refused with a reason that never quotes the secret."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.webhook_signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSignatureError,
    compute_signature,
    signature_headers,
    verify_webhook,
)

SECRET = "whsec_test-secret-0123456789abcdef"
BODY = b'{"event_id":"ev_01J0000000000000000000000A","type":"ping","sequence":0,"data":{}}'
NOW = 1_767_225_600.0


def signed(body: bytes = BODY, secret: str = SECRET, at: float = NOW) -> dict[str, str]:
    return signature_headers(secret, "ev_01J0000000000000000000000A", body, now=at)


def refusal(headers: dict[str, str], body: bytes = BODY, **kwargs: float) -> str:
    with pytest.raises(WebhookSignatureError) as caught:
        verify_webhook(SECRET, headers, body, now=kwargs.pop("now", NOW), **kwargs)
    assert SECRET not in str(caught.value)
    return str(caught.value)


def test_headers_follow_the_documented_format() -> None:
    headers = signed()
    assert headers[EVENT_ID_HEADER] == "ev_01J0000000000000000000000A"
    assert headers[TIMESTAMP_HEADER] == "1767225600"
    expected = hmac.new(SECRET.encode(), b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == "v1=" + expected
    assert expected == expected.lower() and compute_signature(SECRET, 1767225600, BODY) == expected


def test_round_trip_verifies_with_any_header_case() -> None:
    headers = signed()
    verify_webhook(SECRET, headers, BODY, now=NOW)
    verify_webhook(SECRET, {k.lower(): v for k, v in headers.items()}, BODY, now=NOW + 299)
    verify_webhook(SECRET, {k.upper(): v for k, v in headers.items()}, BODY, now=NOW - 299)


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: int) -> None:
    assert "from the receiver's clock" in refusal(signed(), now=NOW + skew)


def test_the_tolerance_is_the_callers_choice() -> None:
    verify_webhook(SECRET, signed(), BODY, tolerance_s=1000, now=NOW + 900)
    assert "more than 5 s" in refusal(signed(), tolerance_s=5, now=NOW + 6)


def test_a_changed_body_timestamp_or_secret_does_not_verify() -> None:
    headers = signed()
    assert "does not match" in refusal(headers, body=BODY.replace(b"ping", b"pong"))
    assert "does not match" in refusal(headers, body=BODY + b" ")
    moved = {**headers, TIMESTAMP_HEADER: str(int(NOW) + 1)}  # replayed with a fresh timestamp
    assert "does not match" in refusal(moved)
    assert "does not match" in refusal(signed(secret="whsec_another"))


@pytest.mark.parametrize("missing", [TIMESTAMP_HEADER, SIGNATURE_HEADER])
def test_a_missing_header_is_named(missing: str) -> None:
    headers = {k: v for k, v in signed().items() if k != missing}
    assert refusal(headers) == f"missing {missing} header"


@pytest.mark.parametrize("value", ["", "v0=abc", "sha256=abc", "v1=", "abc"])
def test_a_signature_header_without_a_v1_value_is_refused(value: str) -> None:
    headers = {**signed(), SIGNATURE_HEADER: value}
    message = refusal(headers)
    assert "no v1= value" in message or "missing" in message


@pytest.mark.parametrize("value", ["-5", "12.5", "soon", "1" * 20])
def test_a_timestamp_that_is_not_unix_seconds_is_refused(value: str) -> None:
    assert "unix seconds" in refusal({**signed(), TIMESTAMP_HEADER: value})


def test_several_v1_values_verify_if_any_matches_secret_rotation() -> None:
    good = signed()[SIGNATURE_HEADER]
    old = signed(secret="whsec_old")[SIGNATURE_HEADER]
    for value in (f"{old},{good}", f"{good}, {old}", f"v0=zz, {good}"):
        verify_webhook(SECRET, {**signed(), SIGNATURE_HEADER: value}, BODY, now=NOW)
    assert "does not match" in refusal({**signed(), SIGNATURE_HEADER: f"{old},v1=00"})


def test_the_body_must_be_the_raw_bytes() -> None:
    with pytest.raises(TypeError):
        verify_webhook(SECRET, signed(), BODY.decode(), now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["²", "１７６７２２５６００", "١٧٦٧٢٢٥٦٠٠", "1767225600\u0660", "+1767225600", "1_767_225_600"])
def test_a_timestamp_of_non_ascii_digits_is_a_signature_error_not_a_crash(value: str) -> None:
    # str.isdigit() says yes to these, and int() either raises ValueError or accepts them: a
    # receiver catching only WebhookSignatureError must still get one.
    assert "unix seconds" in refusal({**signed(), TIMESTAMP_HEADER: value})


HEADER_NAMES = st.sampled_from([TIMESTAMP_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER.lower(), SIGNATURE_HEADER.upper(),
                                EVENT_ID_HEADER])
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=80)  # any code point, lone surrogates included
TIMESTAMPS = st.one_of(ANY_TEXT, st.integers(-10**13, 10**13).map(str), st.just(str(int(NOW))),
                       st.sampled_from(["²", "１２", " 1767225600 ", "1767225600\n", "0x69", "1e9"]))
SIGNATURES = st.one_of(ANY_TEXT, ANY_TEXT.map(lambda t: "v1=" + t), st.just(signed()[SIGNATURE_HEADER]),
                       st.lists(ANY_TEXT, max_size=4).map(lambda parts: ",".join("v1=" + p for p in parts)))


@settings(max_examples=400, deadline=None)
@given(headers=st.dictionaries(st.one_of(HEADER_NAMES, ANY_TEXT), st.one_of(TIMESTAMPS, SIGNATURES), max_size=5),
       body=st.one_of(st.binary(max_size=200), st.just(BODY)), secret=st.one_of(st.just(SECRET), st.text(max_size=40)))
def test_any_headers_and_body_either_verify_or_raise_a_signature_error(headers: dict[str, str], body: bytes,
                                                                       secret: str) -> None:
    try:
        verify_webhook(secret, headers, body, now=NOW)
    except WebhookSignatureError as refused:
        assert SECRET not in str(refused)
    else:  # only the genuine signature of this very body verifies
        assert body == BODY and secret == SECRET


@settings(max_examples=200, deadline=None)
@given(timestamp=TIMESTAMPS, signature=SIGNATURES, body=st.binary(max_size=100))
def test_any_timestamp_and_signature_value_either_verify_or_raise_a_signature_error(timestamp: str, signature: str,
                                                                                    body: bytes) -> None:
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature}
    try:
        verify_webhook(SECRET, headers, body, now=NOW)
    except WebhookSignatureError:
        pass
    else:
        assert timestamp.strip() == str(int(NOW)) and compute_signature(SECRET, timestamp.strip(), body) in signature


@settings(max_examples=300, deadline=None)
@given(signature=SIGNATURES, body=st.one_of(st.binary(max_size=100), st.just(BODY)))
def test_any_signature_value_on_a_fresh_timestamp_either_verifies_or_raises_a_signature_error(signature: str,
                                                                                              body: bytes) -> None:
    try:
        verify_webhook(SECRET, {**signed(), SIGNATURE_HEADER: signature}, body, now=NOW)
    except WebhookSignatureError:
        pass
    else:
        assert compute_signature(SECRET, str(int(NOW)), body) in signature


@pytest.mark.parametrize("value", ["v1=\ud800", "v1=é" * 3, "v1=" + "\x00" * 64])
def test_a_signature_value_of_any_characters_is_a_signature_error(value: str) -> None:
    assert "does not match" in refusal({**signed(), SIGNATURE_HEADER: value})
