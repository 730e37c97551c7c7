"""The REST API fuzzed against its own OpenAPI document (Schemathesis).

The gateway runs as a real process (`python -m quart_gateway`) on real Redis, in front of
upstream stand-ins on loopback that answer plausible bodies for a few batch ids and 404 for
every other. The stand-ins stay healthy, so a 5xx is always a bug here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.servers import GatewayProcess, start_process
from tests.support import Reply, make_token, start_upstream

Case = schemathesis.Case[Any]

OWNER = "fuzz-owner"
STRANGER = "fuzz-stranger"
AGGREGATED = "b-aggregated"  # in the result aggregator, OWNER's
PENDING = "b-pending"  # only in the batch orchestrator, OWNER's
FOREIGN = "b-foreign"  # in the result aggregator, STRANGER's: a 403 for OWNER
MISSING = "b-missing"  # in neither: a 404
BATCH_IDS = (AGGREGATED, PENDING, FOREIGN, MISSING)
OWNERS = {AGGREGATED: OWNER, PENDING: OWNER, FOREIGN: STRANGER}

STATUS_PATH = "/v1/batches/{batch_id}/status"
# A bounded run for CI: a few seconds per operation against a process on loopback.
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Schemathesis' response checks: no 5xx; status code, content type, headers and body as the
# document says. (Its request-side checks are left out: the document declares `batch_id` a
# plain string, so a 400 for an id outside the id rule is not a positive-data failure.)
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def upstream_routes() -> dict[str, Reply]:
    state = {"stage": "essays_processing", "progress": {"done": 3, "total": 5}}
    return {
        f"/internal/v1/batches/{AGGREGATED}/status": Reply(
            body={
                "batch_id": AGGREGATED,
                "user_id": OWNER,
                "pipeline_state": {**state, "user_id": OWNER},
                "last_updated": "2025-01-01T12:00:00Z",
            }
        ),
        f"/internal/v1/batches/{PENDING}/pipeline-state": Reply(
            body={"batch_id": PENDING, "user_id": OWNER, "pipeline_state": state}
        ),
        f"/internal/v1/batches/{FOREIGN}/status": Reply(
            body={"batch_id": FOREIGN, "user_id": STRANGER, "pipeline_state": state}
        ),
    }


@pytest.fixture(name="fuzzed_gateway", scope="module")
async def _fuzzed_gateway(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GatewayProcess]:
    upstream, server = start_upstream()
    upstream.routes.update(upstream_routes())
    env = {
        "REDIS_URL": redis_url,
        "RESULT_AGGREGATOR_URL": upstream.url,
        "BOS_URL": upstream.url,
        "HANDLE_MISSING_BATCHES": "query_bos",
        # The fuzzer sends hundreds of requests as one user: a 429 would hide every other path.
        "STATUS_RATE_LIMIT": "1000000/minute",
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("fuzz") / "gateway.log"
    gateway = await start_process(env, log)
    try:
        yield gateway
    finally:
        gateway.process.kill()
        gateway.process.wait()
        server.shutdown()
        server.server_close()


# Any header value RFC 9110 allows: visible ASCII, Latin-1 (obs-text), spaces and tabs, with
# no leading whitespace. Control characters are malformed HTTP that the HTTP server itself
# (h11) refuses with a bare 400 before the app sees the request (NUL, VT, FF), so they are
# not part of the document's contract.
HEADER_TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(min_codepoint=0x80, max_codepoint=0xFF),
        st.just("\t"),
    ),
    max_size=64,
).map(str.lstrip)
CREDENTIALS: dict[str, st.SearchStrategy[str | None]] = {
    "owner": st.builds(lambda: f"Bearer {make_token(OWNER)}"),
    "stranger": st.builds(lambda: f"Bearer {make_token(STRANGER)}"),
    "expired": st.builds(lambda: f"Bearer {make_token(OWNER, expires_in=-60)}"),
    "forged": st.builds(
        lambda: f"Bearer {make_token(OWNER, key='another-secret-long-enough-for-hs256-ok!')}"
    ),
    "unsigned": st.builds(lambda: f"Bearer {make_token(OWNER, key=None, algorithm='none')}"),
    "none": st.none(),
    "garbage": st.one_of(HEADER_TEXT.map(lambda t: f"Bearer {t}"), HEADER_TEXT),
}
USERS = {"owner": OWNER, "stranger": STRANGER}  # the kinds of valid credentials
# Mostly the owner's valid token, so that most cases get past authentication.
KINDS = st.sampled_from(["owner"] * 6 + [kind for kind in CREDENTIALS if kind != "owner"])


@pytest.fixture(name="api_schema", scope="module")
def _api_schema(fuzzed_gateway: GatewayProcess) -> schemathesis.BaseSchema:
    # The document as the running process serves it.
    return schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/openapi.json", timeout=10)


def with_credentials(case: Case) -> st.SearchStrategy[tuple[Case, str]]:
    """The status operation: credentials of a kind drawn from KINDS, and half of the time a
    batch id the stand-ins know (to reach the upstreams) instead of the fuzzer's own."""

    def build(kind: str, authorization: str | None, batch_id: str | None) -> tuple[Case, str]:
        case.headers.pop("Authorization", None)  # a case-insensitive mapping
        if authorization is not None:
            case.headers["Authorization"] = authorization
        if batch_id is not None:
            case.path_parameters = {**(case.path_parameters or {}), "batch_id": batch_id}
        return case, kind

    return KINDS.flatmap(
        lambda kind: st.builds(
            build,
            st.just(kind),
            CREDENTIALS[kind],
            st.one_of(st.sampled_from(BATCH_IDS), st.none()),
        )
    )


def without_credentials(case: Case) -> tuple[Case, str]:
    """Every other operation, never with credentials. GET /events streams until the gateway
    ends it when its token is good, so it is fuzzed only without one (its document declares
    no parameter or security either): every call is answered at once with a 401."""
    case.headers.pop("Authorization", None)
    if case.query:
        case.query = {k: v for k, v in case.query.items() if k not in ("token", "ticket")}
    return case, "none"


def expected_status(kind: str, batch_id: str) -> set[int]:
    """What the gateway must answer, beyond conforming to the document."""
    if kind not in USERS:
        return {401}
    if batch_id == MISSING:
        return {404}
    if batch_id in OWNERS:
        return {200} if OWNERS[batch_id] == USERS[kind] else {403}
    return {400, 404}  # the fuzzer's ids: invalid, or unknown to both upstreams


@pytest.mark.parametrize(
    ("path", "reached"),
    [
        (STATUS_PATH, {200, 400, 401, 403, 404}),
        ("/healthz", {200}),
        ("/readyz", {200}),
        ("/events", {401}),
    ],
)
def test_every_answer_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema, path: str, reached: set[int]
) -> None:
    operation = api_schema[path]["GET"]
    # Positive cases only: the one parameter is a path string (anything is valid), and the
    # negative cases Schemathesis derives from the security scheme would drop the header the
    # credentials strategy sets. Missing and garbage credentials come from CREDENTIALS.
    cases = operation.as_strategy(GenerationMode.POSITIVE)
    drawn = (
        cases.flatmap(with_credentials) if path == STATUS_PATH else cases.map(without_credentials)
    )
    seen: Counter[int] = Counter()

    @FUZZ_SETTINGS
    @hypothesis.given(drawn)
    def fuzz(drawn_case: tuple[Case, str]) -> None:
        case, kind = drawn_case
        hypothesis.note(f"{kind}: headers={case.headers!r} path={case.path_parameters!r}")
        # Not a 5xx; status code, content type, headers and body as documented.
        response = case.call_and_validate(checks=CHECKS, timeout=5)
        seen[response.status_code] += 1
        if path == STATUS_PATH:
            batch_id = (case.path_parameters or {})["batch_id"]
            assert response.status_code in expected_status(kind, batch_id), response.text
        elif path == "/events":
            assert response.status_code == 401, response.text

    fuzz()
    # The run went past authentication and reached the upstreams, not only the 401 path.
    assert reached <= set(seen), dict(seen)
