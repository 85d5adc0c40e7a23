"""A property-based fuzz of /openapi.json against the live server (schemathesis): valid and invalid
requests for every operation, each signed like a real client's, and none may get a 5xx.

Requests are sent by schemathesis through `requests`; the signing hook is a `requests` auth, which
runs on the prepared request, so it signs the exact body bytes and request target that go out.
`PUT /webhook` is left out: valid random URLs would have the dispatcher POST to random hosts
(tests/unit/test_api_routes.py covers its inputs). Examples per operation are bounded so the
whole fuzz stays well under a minute per database.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api.signing import sign_request
from tests.integration.api_fixtures import Api, api  # noqa: F401

EXAMPLES = 400
EXCLUDED = {("PUT", "/api/v1/webhook")}


class SignedRequests(requests.auth.AuthBase):
    """The X-Paratro-* headers over the prepared request's method, target and body."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key, self.api_secret = api_key, api_secret

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        body = body.encode("utf-8") if isinstance(body, str) else body
        stamp, nonce = str(int(time.time())), secrets.token_urlsafe(16)
        request.headers.update({
            "X-Paratro-Key": self.api_key, "X-Paratro-Timestamp": stamp, "X-Paratro-Nonce": nonce,
            "X-Paratro-Signature": sign_request(self.api_secret, stamp, nonce, request.method or "GET",
                                             request.path_url, body)})
        return request


def test_no_request_from_the_openapi_spec_gets_a_server_error(api: Api) -> None:
    tenant = api.new_tenant("fuzz")
    schema = schemathesis.openapi.from_url(api.server.base_url + "/openapi.json")
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/api/v1/wallets", "/api/v1/transactions", "/api/v1/chains",
                                              "/api/v1/webhook/test", "/api/v1/ready"}
    strategy = st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))
    auth = SignedRequests(tenant.api_key, tenant.api_secret)
    statuses: Counter[tuple[str, int]] = Counter()

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(auth=auth, timeout=30)
        statuses[(case.path, response.status_code)] += 1
        case.validate_response(response, checks=[not_a_server_error])

    started = time.monotonic()
    fuzz()
    assert time.monotonic() - started < 120
    answered = {path for path, _ in statuses}
    assert len(answered) >= len({op.path for op in operations}) - 2, statuses  # nearly every path was exercised
    assert any(status < 300 for _, status in statuses), statuses  # valid requests were made, not only refusals
    assert not any(status == 401 for _, status in statuses), statuses  # every request was signed right
    assert not any(status >= 500 for _, status in statuses)


@pytest.mark.parametrize("path", ["/api/v1/chains", "/api/v1/wallets?limit=1"])
def test_the_fuzz_signer_is_accepted(api: Api, path: str) -> None:
    tenant = api.new_tenant("fuzz signer")
    answer = requests.get(api.server.base_url + path, auth=SignedRequests(tenant.api_key, tenant.api_secret), timeout=10)
    assert answer.status_code == 200, answer.text
