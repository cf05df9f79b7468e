"""Portal tokens: a link or session opens only with the key and kind it was sealed with."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.portal.tokens import (
    Grant,
    csrf_token,
    new_link,
    new_session,
    portal_key,
    seal,
    unseal,
)

KEY = portal_key("test-admin-token-0123456789")
grants = st.builds(
    Grant,
    id=st.text(min_size=1, max_size=30),
    tenant_id=st.text(min_size=1, max_size=50),
    read_only=st.booleans(),
    expires=st.floats(min_value=0, max_value=4e9),
    session_seconds=st.integers(min_value=60, max_value=43_200),
)


@given(grants)
def test_a_sealed_grant_opens_with_its_key_and_kind_only(grant: Grant) -> None:
    token = seal(KEY, "link", grant)
    assert unseal(KEY, "link", token) == grant
    assert unseal(KEY, "session", token) is None
    assert unseal(portal_key("another-admin-token-0123"), "link", token) is None


@given(grants, st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_is_refused(grant: Grant, where: int, flip: int) -> None:
    token = seal(KEY, "link", grant).encode()
    at = where % len(token)
    damaged = token[:at] + bytes([token[at] ^ flip]) + token[at + 1 :]
    opened = unseal(KEY, "link", damaged.decode("latin-1"))
    # Base64 has spellings that decode alike; only the very same grant may come out.
    assert opened is None or opened == grant


@given(st.text(max_size=200))
def test_garbage_is_refused_without_raising(token: str) -> None:
    assert unseal(KEY, "session", token) is None


def test_a_session_has_a_fresh_id_and_its_own_csrf_token() -> None:
    link = new_link("acme", read_only=False, session_seconds=600, now=1000.0)
    assert link.expires == 1300.0
    one, two = new_session(link, now=2000.0), new_session(link, now=2000.0)
    assert one.id not in (link.id, two.id)
    assert one.expires == 2600.0
    assert (one.tenant_id, one.read_only) == ("acme", False)
    assert csrf_token(KEY, one) != csrf_token(KEY, two)
    assert csrf_token(KEY, one) == csrf_token(KEY, one)
