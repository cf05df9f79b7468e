"""The endpoint form to the API's JSON and back: what the form shows is what it saves."""

from __future__ import annotations

import orjson
import pytest

from service.admin.requests import decode_body
from service.admin.responses import ApiError
from service.portal.forms import form_values, subscription_json
from service.subscriptions.auth import MASK
from service.subscriptions.model import SubscriptionCreate


def test_a_filled_form_is_the_subscription_the_api_takes() -> None:
    form = {
        "name": "CRM", "url": "https://crm.example.com/hooks", "method": "PUT",
        "event_patterns": "conversation.*\n", "filters": '[{"path": "data.call.duration", '
        '"op": "gt", "value": 30}]', "headers": "X-Team: voice\nX-Caller: {{data.contact.id}}",
        "body_template": '{"phone": "{{data.contact.phoneNumber}}"}', "auth_type": "basic",
        "auth_username": "svc", "auth_password": "pw", "success_status_codes": "200, 201",
        "success_json_path": "result.ok", "success_json_value": "true", "timeout_seconds": "5",
        "max_attempts": "3", "rate_per_second": "2.5",
    }  # fmt: skip
    body = subscription_json(form, ["call.ended"])
    sub = decode_body(orjson.dumps(body), SubscriptionCreate)
    assert sub.event_types == ("call.ended", "conversation.*")
    assert sub.headers == {"X-Team": "voice", "X-Caller": "{{data.contact.id}}"}
    assert sub.success is not None
    assert sub.success.status_codes == (200, 201)
    assert sub.rate_limit is not None
    assert sub.rate_limit.per_second == 2.5
    assert (sub.timeout_seconds, sub.max_attempts, sub.method) == (5.0, 3, "PUT")
    view = {**orjson.loads(orjson.dumps(body)), "auth": {"type": "basic", "username": "svc",
                                                          "password": MASK}}  # fmt: skip
    again = subscription_json(form_values(view), ["call.ended"])
    # Shown again, the saved password is the mask, which a PATCH keeps (docs/api.md).
    assert again == {**body, "auth": {"type": "basic", "username": "svc", "password": MASK}}


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [("filters", "[not json", "filters"), ("headers", "no colon here", "headers"),
     ("timeout_seconds", "soon", "timeout_seconds"),
     ("success_status_codes", "ok", "success.status_codes")],
)  # fmt: skip
def test_what_the_form_cannot_read_names_its_field(field: str, value: str, named: str) -> None:
    with pytest.raises(ApiError) as refused:
        subscription_json({"name": "x", "url": "https://x.example", field: value}, ["call.ended"])
    assert refused.value.field == named
    assert refused.value.status == 422
