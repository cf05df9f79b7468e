"""Routing: tenant isolation, exact types, wildcards, disabled subscriptions, scale."""

from __future__ import annotations

import time

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from service.events.envelope import Event
from service.routing.filters import Filter, path_text
from service.routing.router import Router
from service.subscriptions.model import Subscription


def make_sub(
    sub_id: str, tenant: str, types: tuple[str, ...], enabled: bool = True
) -> Subscription:
    return Subscription(
        id=sub_id,
        tenant_id=tenant,
        name=sub_id,
        url="https://example.com/hook",
        event_types=types,
        enabled=enabled,
        secret="whsec_" + "A" * 43 + "=",
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
    )


def ids(subs: list[Subscription]) -> set[str]:
    return {s.id for s in subs}


def test_exact_prefix_and_any() -> None:
    r = Router()
    r.upsert(make_sub("exact", "t1", ("call.ended",)))
    r.upsert(make_sub("calls", "t1", ("call.*",)))
    r.upsert(make_sub("all", "t1", ("*",)))
    r.upsert(make_sub("contacts", "t1", ("contact.*",)))
    assert ids(r.match("t1", "call.ended")) == {"exact", "calls", "all"}
    assert ids(r.match("t1", "call.started")) == {"calls", "all"}
    assert ids(r.match("t1", "contact.created")) == {"contacts", "all"}
    assert ids(r.match("t1", "callx.ended")) == {"all"}  # a prefix matches whole segments
    assert ids(r.match("t1", "call")) == {"all"}


def test_tenants_never_see_each_other() -> None:
    r = Router()
    r.upsert(make_sub("a", "tenant-a", ("*",)))
    r.upsert(make_sub("b", "tenant-b", ("*",)))
    assert ids(r.match("tenant-a", "call.ended")) == {"a"}
    assert ids(r.match("tenant-b", "call.ended")) == {"b"}
    assert r.match("tenant-c", "call.ended") == []


def test_overlapping_patterns_deliver_once() -> None:
    r = Router()
    r.upsert(make_sub("s", "t", ("call.ended", "call.*", "*")))
    assert [s.id for s in r.match("t", "call.ended")] == ["s"]


def test_disabled_update_and_delete() -> None:
    r = Router()
    r.upsert(make_sub("s", "t", ("call.ended",)))
    r.upsert(make_sub("s", "t", ("call.ended",), enabled=False))
    assert r.match("t", "call.ended") == []
    r.upsert(make_sub("s", "t", ("call.started",)))
    assert ids(r.match("t", "call.started")) == {"s"}
    assert r.match("t", "call.ended") == []
    r.upsert(make_sub("s", "other", ("call.started",)))  # moved to another tenant
    assert r.match("t", "call.started") == []
    assert ids(r.match("other", "call.started")) == {"s"}
    r.remove("s")
    assert r.match("other", "call.started") == []


def test_ten_thousand_subscriptions_do_not_slow_a_lookup() -> None:
    # Not a timing test: counts how many subscriptions a lookup touches, which must not
    # grow with the number of subscriptions of other tenants or other types.
    r = Router()
    for i in range(10_000):
        r.upsert(make_sub(f"s{i}", f"tenant{i % 100}", (f"type{i % 50}.x",)))
    r.upsert(make_sub("target", "tenant7", ("call.ended",)))
    started = time.perf_counter()
    found = r.match("tenant7", "call.ended")  # builds tenant7's index once
    assert ids(found) == {"target"}
    index = r._index["tenant7"]
    assert len(index.exact["call.ended"]) == 1
    assert sum(len(v) for v in index.exact.values()) == 101  # only tenant7's own
    assert time.perf_counter() - started < 5  # a sanity bound, not a benchmark


_types = st.sampled_from(["call.ended", "call.started", "call.status.changed", "contact.created"])
_patterns = st.sampled_from(["call.ended", "call.*", "call.status.*", "contact.*", "*", "x.y"])


def _naive_match(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


@given(
    st.lists(
        st.tuples(st.sampled_from(["t1", "t2"]), st.lists(_patterns, min_size=1, max_size=3),
                  st.booleans()),
        max_size=12,
    ),
    st.sampled_from(["t1", "t2", "t3"]),
    _types,
)  # fmt: skip
def test_router_agrees_with_a_scan(
    specs: list[tuple[str, list[str], bool]], tenant: str, event_type: str
) -> None:
    r = Router()
    subs = [make_sub(f"s{i}", t, tuple(p), e) for i, (t, p, e) in enumerate(specs)]
    for sub in subs:
        r.upsert(sub)
    expected = {
        s.id
        for s in subs
        if s.enabled
        and s.tenant_id == tenant
        and any(_naive_match(p, event_type) for p in s.event_types)
    }
    found = r.match(tenant, event_type)
    assert ids(found) == expected
    assert len(found) == len(expected)  # no duplicates


def test_route_names_the_condition_that_dropped_an_event() -> None:
    r = Router()
    conditions = (
        Filter("data.agent.id", "eq", "agent_1"),
        Filter("data.call.duration", "gt", 60),
        Filter("data.never", "exists", True),
    )
    filtered_sub = msgspec.structs.replace(make_sub("f", "acme", ("*",)), filters=conditions)
    r.upsert(filtered_sub)
    r.upsert(make_sub("plain", "acme", ("*",)))
    event = Event(id="evt_1", source="/s", type="call.ended", tenant_id="acme",
                  time="2026-01-01T00:00:00Z", time_unix=0.0,
                  data_raw=b'{"agent": {"id": "agent_1"}, "call": {"duration": 30}}')  # fmt: skip
    deliver, refused, filtered = r.route(event)
    assert ids(deliver) == {"plain"}
    assert refused == []
    [(sub_id, condition, index)] = filtered
    assert (sub_id, index, path_text(condition.path), condition.op) == (
        "f",
        1,
        "data.call.duration",
        "gt",
    )
