"""Standard Webhooks signatures: the published test vector, OpenAI's own verifier, and every
way a delivery can be wrong."""

from __future__ import annotations

import base64
import time

import pytest
from openai import InvalidWebhookSignatureError, OpenAI

from navai_core._errors import ConfigurationError, InvalidWebhook
from navai_core.calls.webhooks import (
    BAD_TIMESTAMP,
    MISSING_HEADERS,
    NO_MATCH,
    STALE_TIMESTAMP,
    decode_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
    webhook_secret_problem,
)

# The Standard Webhooks specification's test vector (libraries/*/tests in
# github.com/standard-webhooks/standard-webhooks): secret, id, timestamp, body -> signature.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The same repository's "invalid signature" case: one character off.
VECTOR_WRONG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="

SECRET = "whsec_" + base64.b64encode(b"navai-test-webhook-secret-32byte").decode()


def vector_headers(signature: str = VECTOR_SIGNATURE) -> dict[str, str]:
    return {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }


def test_signer_reproduces_the_published_vector():
    assert sign_webhook(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verifier_accepts_the_published_vector():
    checked = verify_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)
    assert (checked.webhook_id, checked.timestamp) == (VECTOR_ID, VECTOR_TIMESTAMP)


def test_verifier_refuses_the_published_wrong_signature():
    with pytest.raises(InvalidWebhook, match=NO_MATCH) as caught:
        verify_webhook(
            VECTOR_SECRET, vector_headers(VECTOR_WRONG), VECTOR_BODY, now=VECTOR_TIMESTAMP
        )
    assert caught.value.status_code == 400


def test_several_signatures_any_v1_one_may_match():
    header = " ".join(
        [
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
            "v2," + VECTOR_SIGNATURE[3:],  # another version is skipped, even with the right bytes
            VECTOR_SIGNATURE,
            "garbage",
            "v1,not base64!",
        ]
    )
    verify_webhook(VECTOR_SECRET, vector_headers(header), VECTOR_BODY, now=VECTOR_TIMESTAMP)
    only_v2 = "v2," + VECTOR_SIGNATURE[3:]
    with pytest.raises(InvalidWebhook, match=NO_MATCH):
        verify_webhook(VECTOR_SECRET, vector_headers(only_v2), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    "body",
    [
        b'{"test": 2432232315}',  # one digit
        b'{"test":2432232314}',  # same JSON, other bytes: the raw body is what is signed
        b'{"test": 2432232314}\n',
        b"",
    ],
)
def test_altered_body_is_refused(body):
    with pytest.raises(InvalidWebhook, match=NO_MATCH):
        verify_webhook(VECTOR_SECRET, vector_headers(), body, now=VECTOR_TIMESTAMP)


def test_altered_id_or_timestamp_is_refused():
    for name, value in (("webhook-id", "msg_other"), ("webhook-timestamp", "1614265331")):
        headers = {**vector_headers(), name: value}
        with pytest.raises(InvalidWebhook, match=NO_MATCH):
            verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_other_secret_is_refused():
    with pytest.raises(InvalidWebhook, match=NO_MATCH):
        verify_webhook(SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_blank_header_is_refused(missing):
    headers = vector_headers()
    del headers[missing]
    with pytest.raises(InvalidWebhook, match=MISSING_HEADERS):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)
    headers[missing] = "  "
    with pytest.raises(InvalidWebhook, match=MISSING_HEADERS):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(
    "timestamp", ["hello", "1614265330.0", "-1614265330", "1_614_265_330", "1e9"]
)
def test_timestamp_must_be_unix_seconds(timestamp):
    headers = {**vector_headers(), "webhook-timestamp": timestamp}
    with pytest.raises(InvalidWebhook, match=BAD_TIMESTAMP):
        verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamps_within_300_seconds_either_way_pass(offset):
    verify_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + offset)


@pytest.mark.parametrize("offset", [-301, 301, 86_400])
def test_stale_or_future_timestamps_are_refused(offset):
    # The signature is right: only the clock refuses it (a replayed or post-dated delivery).
    with pytest.raises(InvalidWebhook, match=STALE_TIMESTAMP):
        verify_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP + offset)


def test_default_clock_is_now():
    body = b'{"type":"realtime.call.incoming"}'
    verify_webhook(SECRET, webhook_headers(SECRET, "wh_1", body), body)
    stale = webhook_headers(SECRET, "wh_1", body, timestamp=int(time.time()) - 301)
    with pytest.raises(InvalidWebhook, match=STALE_TIMESTAMP):
        verify_webhook(SECRET, stale, body)


def test_non_ascii_body_is_signed_as_bytes():
    body = '{"name":"Zoë","emoji":"☎"}'.encode()
    headers = webhook_headers(SECRET, "wh_2", body, timestamp=1000)
    verify_webhook(SECRET, headers, body, now=1000)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, headers, body.decode().encode("utf-16"), now=1000)


def test_secret_forms():
    key = decode_webhook_secret(VECTOR_SECRET)
    assert key == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    # OpenAI's secrets are padded base64; padding left out still decodes.
    padded = "whsec_" + base64.b64encode(b"12345").decode()
    assert padded.endswith("=")
    assert decode_webhook_secret(padded.rstrip("=")) == b"12345"
    for bad in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not base64!", "whsec_%%%%"):
        with pytest.raises(ConfigurationError) as caught:
            decode_webhook_secret(bad)
        assert bad not in caught.value.message or bad == "whsec_"
        assert webhook_secret_problem(bad) == caught.value.message
    assert webhook_secret_problem(None) is None
    assert webhook_secret_problem(VECTOR_SECRET) is None


# ----- against openai-python's own verifier ---------------------------------------------------


def openai_verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    client = OpenAI(api_key="sk-test-not-used", webhook_secret=secret)
    try:
        client.webhooks.verify_signature(body, headers)
    except InvalidWebhookSignatureError:
        return False
    return True


def test_openai_python_accepts_what_navai_signs():
    body = b'{"type":"realtime.call.incoming","data":{"call_id":"rtc_1","sip_headers":[]}}'
    headers = webhook_headers(SECRET, "wh_openai", body)
    assert openai_verify(SECRET, body, headers)
    # ... and both refuse the same alterations.
    altered = body.replace(b"rtc_1", b"rtc_2")
    assert not openai_verify(SECRET, altered, headers)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, headers, altered)
    stale = webhook_headers(SECRET, "wh_openai", body, timestamp=int(time.time()) - 301)
    assert not openai_verify(SECRET, body, stale)
    with pytest.raises(InvalidWebhook):
        verify_webhook(SECRET, stale, body)


def test_openai_python_and_navai_agree_on_the_published_vector():
    # openai-python checks the clock against time.time(); a fresh signature of the vector's
    # body with the vector's secret, made by each side, is accepted by the other.
    now = int(time.time())
    ours = sign_webhook(VECTOR_SECRET, VECTOR_ID, now, VECTOR_BODY)
    headers = {**vector_headers(ours), "webhook-timestamp": str(now)}
    assert openai_verify(VECTOR_SECRET, VECTOR_BODY, headers)
    verify_webhook(VECTOR_SECRET, headers, VECTOR_BODY)
    rotated = {**headers, "webhook-signature": f"{VECTOR_WRONG} {ours}"}
    assert openai_verify(VECTOR_SECRET, VECTOR_BODY, rotated)
    verify_webhook(VECTOR_SECRET, rotated, VECTOR_BODY)
