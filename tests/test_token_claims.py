"""Validly signed tokens with odd claims: refused as invalid_token (401), never a crash (issue 19, item 4).

Claims come from the signer, and a signature says who signed, not that the
signer's software wrote sane values: ``exp`` of 10**400, a numeric string, an
id with a control character. Explicit cases first, then Hypothesis fuzzing the
claims against the verifier and against the API.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heartbeat.limiter.tokens import MAX_NUMERIC_DATE, PlaybackClaims, TokenError, TokenVerifier
from tests.conftest import TOKEN_SECRETS

# Fixed, repeatable examples: the suite must not flake, and its time matters.
FUZZ = settings(derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def signed(claims: dict) -> str:
    """A token over exactly these claims (any JSON: PyJWT's encode would refuse some), signed with the test key k1."""
    payload = json.dumps(claims).encode()
    return jwt.api_jws.encode(payload, TOKEN_SECRETS["k1"], algorithm="HS256", headers={"kid": "k1"})


def later() -> int:
    return int(time.time()) + 300


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(TOKEN_SECRETS)


EXTREME = 10**400


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": EXTREME},
        {"exp": -EXTREME},
        {"exp": float("inf")},
        {"exp": float("nan")},
        {"exp": 1e300},
        {"exp": MAX_NUMERIC_DATE + 1},
        {"exp": -1},
        {"nbf": EXTREME},
        {"nbf": -EXTREME},
        {"nbf": float("-inf")},
        {"iat": EXTREME},
        {"iat": [1]},
        {"exp": True},
        # Wrongly typed whatever the number: a fixed one keeps the test ids the same in every process (xdist).
        {"exp": [4_102_444_800]},
        {"exp": {"at": 4_102_444_800}},
    ],
    ids=lambda claims: repr(claims)[:40],
)
def test_extreme_or_wrongly_typed_times_are_invalid_tokens(verifier: TokenVerifier, claims: dict) -> None:
    token = signed({"sub": "alice", "exp": later(), **claims})
    with pytest.raises(TokenError) as refused:
        verifier.verify(token)
    assert (refused.value.code, refused.value.reason) == ("invalid_token", "claims")


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_a_numeric_string_is_no_numeric_date(verifier: TokenVerifier, name: str) -> None:
    # RFC 7519: a NumericDate is a JSON number. PyJWT would take "1765000000".
    value = str(later()) if name == "exp" else str(int(time.time()) - 60)
    with pytest.raises(TokenError) as refused:
        verifier.verify(signed({"sub": "alice", "exp": later(), name: value}))
    assert refused.value.reason == "claims" and name in refused.value.message


def test_whole_number_times_in_range_still_verify(verifier: TokenVerifier) -> None:
    now = int(time.time())
    claims = {"sub": "alice", "exp": MAX_NUMERIC_DATE, "nbf": 0, "iat": now}
    assert verifier.verify(signed(claims)) == PlaybackClaims("alice")
    assert verifier.verify(signed(claims)) == PlaybackClaims("alice")  # the remembered path too


def test_times_are_still_enforced(verifier: TokenVerifier) -> None:
    now = int(time.time())
    with pytest.raises(TokenError) as expired:
        verifier.verify(signed({"sub": "alice", "exp": now - 120}))
    assert expired.value.code == "token_expired"
    for name in ("nbf", "iat"):
        with pytest.raises(TokenError, match=rf"not yet valid \({name}\)"):
            verifier.verify(signed({"sub": "alice", "exp": now + 600, name: now + 300}))


@pytest.mark.parametrize("plan", ["", "a\x00b", "line\nbreak", "x" * 129, 7, ["premium"], "right\u202eleft"])
def test_the_plan_claim_follows_the_id_rules(verifier: TokenVerifier, plan: object) -> None:
    with pytest.raises(TokenError) as refused:
        verifier.verify(signed({"sub": "alice", "exp": later(), "plan": plan}))
    assert refused.value.reason == "claims" and "plan" in refused.value.message


# --- Hypothesis ------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**1000), max_value=10**1000)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=140)
    | st.integers(min_value=0, max_value=2 * MAX_NUMERIC_DATE).map(str)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
# Numbers at and past the edges, as a careless or hostile signer writes them.
EDGES = st.sampled_from(
    [EXTREME, -EXTREME, 2**63, 2**64 + 1, MAX_NUMERIC_DATE + 1, -1, 0, float("inf"), float("-inf"), float("nan"), 1e300]
)
ODD_VALUES = EDGES | JSON_VALUES
CLAIM_NAMES = ("sub", "exp", "nbf", "iat", "sid", "plan", "maxStreams", "iss", "aud")


@st.composite
def claim_sets(draw: st.DrawFn) -> dict:
    """Sane claims (some optional ones present), then one to three of them odd, and maybe an extra one."""
    now = int(time.time())
    claims: dict = {"sub": "alice", "exp": now + 300}
    for name, sane in (("nbf", now - 60), ("iat", now - 60), ("sid", "tv"), ("plan", "premium"), ("maxStreams", 2)):
        if draw(st.booleans()):
            claims[name] = sane
    for name in draw(st.lists(st.sampled_from(CLAIM_NAMES), min_size=1, max_size=3, unique=True)):
        claims[name] = draw(ODD_VALUES)
    if draw(st.booleans()):
        claims[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    return claims


@settings(FUZZ, max_examples=300)
@given(claims=claim_sets())
def test_fuzzed_claims_verify_or_raise_token_error_only(claims: dict) -> None:
    token = signed(claims)
    for verifier in (
        TokenVerifier(TOKEN_SECRETS),
        TokenVerifier(TOKEN_SECRETS, issuer="https://auth.example", audience="streamlimit"),
    ):
        try:
            verified = verifier.verify(token)
        except TokenError:
            continue
        # What passes is usable: ids by the id rules, times whole numbers in range.
        assert isinstance(verified.user_id, str) and verified.user_id
        assert all(type(claims.get(name, 0)) is int for name in ("exp", "nbf", "iat"))
        assert verifier.verify(token) == verified


@pytest.mark.django_db
@settings(FUZZ, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(claims=claim_sets())
def test_fuzzed_claims_never_make_the_api_answer_5xx(token_keys, claims: dict) -> None:
    token = signed(claims)
    client = Client(raise_request_exception=False)
    body = json.dumps({"streamId": "movie", "sessionId": claims["sid"] if claims.get("sid") == "tv" else "s0"})
    headers = {"Authorization": f"Bearer {token}"}
    answers = [
        client.post("/heartbeat", body, content_type="application/json", headers=headers),
        client.get("/sessions", headers=headers),
        client.post("/heartbeat/stop", body, content_type="application/json", headers=headers),
    ]
    for answer in answers:
        assert answer.status_code < 500, (answer.status_code, answer.content[:300])
        if answer.status_code == 401:
            assert answer.json()["code"] in ("invalid_token", "token_expired")
