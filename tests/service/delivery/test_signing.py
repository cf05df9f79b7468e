"""Signatures verify with the `standardwebhooks` library, the outside judge."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from service.delivery.signing import message_id, new_secret, secret_key, sign


@given(text=st.text(max_size=2000), event_id=st.text(min_size=1, max_size=50))
def test_signature_matches_standardwebhooks(text: str, event_id: str) -> None:
    secret = new_secret()
    msg_id = message_id("sub_0123", event_id)
    ts = 1_800_000_000
    ours = sign(secret_key(secret), msg_id, ts, text.encode())
    theirs = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), text)
    assert ours == theirs


def test_verify_end_to_end_with_headers() -> None:
    secret = new_secret()
    body = b'{"id":"evt_1","type":"call.ended"}'
    msg_id = message_id("sub_1", "evt_1")
    ts = int(time.time())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret_key(secret), msg_id, ts, body),
    }
    Webhook(secret).verify(body, headers)  # raises if it does not verify
    headers["webhook-signature"] = sign(secret_key(new_secret()), msg_id, ts, body)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secret).verify(body, headers)


def test_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret


def test_message_id_is_stable_and_has_no_dot() -> None:
    a = message_id("sub_1", "evt.with.dots")
    assert a == message_id("sub_1", "evt.with.dots")
    assert a != message_id("sub_2", "evt.with.dots")
    assert "." not in a


@pytest.mark.parametrize(
    "bad", ["nope", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_secret_key_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by cause
        secret_key(bad)
