"""heartbeat/limiter/tokens.py: key parsing, the verifier, and start-up checks of the token settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.core.checks import run_checks
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from heartbeat.limiter.limits import parse_plan_limits
from heartbeat.limiter.tokens import (
    PlaybackClaims,
    TokenError,
    TokenVerifier,
    load_jwks,
    parse_hs256_keys,
)
from tests.conftest import ROOT, TOKEN_SECRETS, make_token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_keys() -> dict[str, tuple[object, str]]:
    """One fresh private key per public-key algorithm, by kid."""
    return {
        "rsa-1": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        "ec-1": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        "ed-1": (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    }


def jwks_of(keys: dict[str, tuple[object, str]]) -> dict:
    """The public JWKS of ``keys`` (each with its kid; no alg, so PyJWT infers it from kty/crv)."""
    entries = []
    for kid, (key, algorithm) in keys.items():
        to_jwk = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[algorithm].to_jwk
        entries.append({**json.loads(to_jwk(key.public_key())), "kid": kid})  # type: ignore[attr-defined]
    return {"keys": entries}


@pytest.fixture(scope="module")
def public_keys() -> dict[str, tuple[object, str]]:
    return private_keys()


@pytest.fixture
def verifier(public_keys) -> TokenVerifier:
    return TokenVerifier(TOKEN_SECRETS, jwks_of(public_keys), leeway_seconds=30)


def reason_of(verifier: TokenVerifier, token: object) -> tuple[str, str]:
    with pytest.raises(TokenError) as caught:
        verifier.verify(token)
    return caught.value.code, caught.value.reason


# --- Keys and settings ---------------------------------------------------------


def test_hs256_keys_parse_as_kid_secret_pairs() -> None:
    assert parse_hs256_keys(" a=" + "x" * 32 + ", b=" + "y" * 40 + ",") == {"a": "x" * 32, "b": "y" * 40}
    assert parse_hs256_keys("") == {}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("a=" + "x" * 31, "at least 32 bytes"),
        ("just-a-secret-without-kid-0123456789", "kid=secret"),
        ("=" + "x" * 32, "kid=secret"),
        ("a=" + "x" * 32 + ",a=" + "y" * 32, "twice"),
    ],
)
def test_bad_hs256_keys_are_refused_without_echoing_the_secret(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        parse_hs256_keys(raw)
    assert "x" * 31 not in str(caught.value) and "y" * 32 not in str(caught.value)


def test_plan_limits_parse_and_refuse_bad_values() -> None:
    assert parse_plan_limits("basic=1, standard=2,premium=4") == {"basic": 1, "standard": 2, "premium": 4}
    for bad in ("basic", "basic=0", "basic=51", "basic=two", "=2"):
        with pytest.raises(ValueError):
            parse_plan_limits(bad)


def test_a_jwks_file_with_private_or_kidless_keys_is_refused(tmp_path: Path, public_keys) -> None:
    good = jwks_of(public_keys)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(good))
    assert load_jwks(str(path)) == good
    private = json.loads(RSAAlgorithm.to_jwk(public_keys["rsa-1"][0], as_dict=False))  # type: ignore[arg-type]
    cases = {
        "private": {"keys": [{**private, "kid": "p"}]},
        "no kid": {"keys": [{k: v for k, v in good["keys"][0].items() if k != "kid"}]},
        "secret": {"keys": [{"kty": "oct", "k": b64(b"x" * 32), "kid": "s"}]},
        "not a jwks": [1, 2],
        "unusable": {"keys": [{"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "bad"}]},
    }
    for document in cases.values():
        path.write_text(json.dumps(document))
        with pytest.raises(ValueError):
            load_jwks(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_jwks(str(path))
    with pytest.raises(ValueError, match="cannot read"):
        load_jwks(str(tmp_path / "missing.json"))


def test_a_kid_both_secret_and_public_key_is_refused(public_keys) -> None:
    with pytest.raises(ValueError, match="both"):
        TokenVerifier({"rsa-1": "x" * 32}, jwks_of(public_keys))


def start_up(env: dict[str, str]) -> subprocess.CompletedProcess:
    """``manage.py check`` in a fresh process: the settings are read as at start-up."""
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"PLAYBACK_TOKEN_KEYS": "k1=too-short-secret"}, "PLAYBACK_TOKEN_KEYS"),
        ({"PLAYBACK_TOKEN_JWKS_FILE": "/nonexistent/jwks.json"}, "PLAYBACK_TOKEN_JWKS_FILE"),
        ({"PLAN_LIMITS": "basic=0"}, "PLAN_LIMITS"),
        ({"LIMIT_POLICY": "kick_everyone"}, "LIMIT_POLICY"),
        ({"PLAYBACK_TOKEN_LEEWAY_SECONDS": "-1"}, "PLAYBACK_TOKEN_LEEWAY_SECONDS"),
    ],
)
def test_a_bad_token_setting_stops_start_up_naming_it(env: dict[str, str], setting: str) -> None:
    result = start_up(env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "configuration error" in line and setting in line, line
    assert "too-short-secret" not in result.stderr


def test_check_deploy_warns_when_tokens_are_off(settings) -> None:
    settings.PLAYBACK_TOKEN_KEYS = {}
    settings.PLAYBACK_TOKEN_JWKS = None
    ids = [m.id for m in run_checks(include_deployment_checks=True)]
    assert "streamlimit.W001" in ids
    settings.PLAYBACK_TOKEN_KEYS = dict(TOKEN_SECRETS)
    assert "streamlimit.W001" not in [m.id for m in run_checks(include_deployment_checks=True)]


# --- The verifier ------------------------------------------------------------------


def test_both_rotation_keys_verify_their_own_tokens(verifier: TokenVerifier) -> None:
    for kid in ("k1", "k2"):
        assert verifier.verify(make_token("alice", kid=kid)) == PlaybackClaims("alice")


def test_a_token_signed_with_the_other_rotation_key_is_refused(verifier: TokenVerifier) -> None:
    forged = make_token("alice", kid="k1", secret=TOKEN_SECRETS["k2"])
    assert reason_of(verifier, forged) == ("invalid_token", "signature")


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
def test_jwks_keys_verify_rs256_es256_and_eddsa_tokens(verifier: TokenVerifier, public_keys, kid: str) -> None:
    key, algorithm = public_keys[kid]
    token = make_token("bob", kid=kid, secret=key, algorithm=algorithm, sid="tv", maxStreams=2, plan="family")
    assert verifier.verify(token) == PlaybackClaims("bob", "tv", 2, "family")


def test_a_public_key_token_signed_by_another_key_is_refused(verifier: TokenVerifier) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = make_token("bob", kid="ec-1", secret=stranger, algorithm="ES256")
    assert reason_of(verifier, token) == ("invalid_token", "signature")


def test_a_token_with_another_algorithm_than_its_keys_is_refused(verifier: TokenVerifier, public_keys) -> None:
    # ES256 key id, but signed with RS256 by the RSA key: the ES256 key allows ES256 only.
    token = make_token("bob", kid="ec-1", secret=public_keys["rsa-1"][0], algorithm="RS256")
    assert reason_of(verifier, token) == ("invalid_token", "algorithm")


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 300}).encode())
    for token in (f"{header}.{payload}.", f"{header}.{payload}"):
        code, _ = reason_of(verifier, token)
        assert code == "invalid_token"


def test_hs256_token_signed_with_the_public_key_is_refused_not_a_crash(verifier: TokenVerifier, public_keys) -> None:
    """The HS/RS confusion: the attacker uses the (public) PEM as an HMAC secret."""
    pem = (
        public_keys["rsa-1"][0]
        .public_key()  # type: ignore[attr-defined]
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 300}).encode())
    signature = b64(hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert reason_of(verifier, f"{header}.{payload}.{signature}") == ("invalid_token", "algorithm")


@pytest.mark.parametrize("kid", ["unknown", None, 7, ["k1"]])
def test_an_unknown_or_non_string_kid_is_refused(verifier: TokenVerifier, kid: object) -> None:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid is not None else {})}).encode())
    payload = b64(json.dumps({"sub": "alice", "exp": int(time.time()) + 300}).encode())
    signature = b64(hmac.new(TOKEN_SECRETS["k1"].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest())
    assert reason_of(verifier, f"{header}.{payload}.{signature}") == ("invalid_token", "unknown_kid")


def test_expiry_is_refused_beyond_the_leeway_only(verifier: TokenVerifier) -> None:
    assert verifier.verify(make_token("alice", expires_in=-10)).user_id == "alice"  # within 30 s of leeway
    assert reason_of(verifier, make_token("alice", expires_in=-40)) == ("token_expired", "expired")
    strict = TokenVerifier(TOKEN_SECRETS, leeway_seconds=0)
    assert reason_of(strict, make_token("alice", expires_in=-10)) == ("token_expired", "expired")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 42},
        {"sub": "a\nb"},
        {"sid": ""},
        {"sid": 3},
        {"maxStreams": 0},
        {"maxStreams": 51},
        {"maxStreams": "3"},
        {"maxStreams": True},
        {"plan": ""},
        {"plan": 5},
    ],
)
def test_tokens_with_bad_claims_are_refused(verifier: TokenVerifier, claims: dict) -> None:
    # The parameter's dict is shared by every run of the test in this process: left as it is.
    others = {name: value for name, value in claims.items() if name != "sub"}
    assert reason_of(verifier, make_token(claims.get("sub", "alice"), **others)) == ("invalid_token", "claims")


def test_a_token_without_exp_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode({"sub": "alice"}, TOKEN_SECRETS["k1"], algorithm="HS256", headers={"kid": "k1"})
    assert reason_of(verifier, token) == ("invalid_token", "claims")


def test_issuer_and_audience_are_checked_when_set() -> None:
    strict = TokenVerifier(TOKEN_SECRETS, issuer="https://auth.example", audience="streamlimit")
    good = make_token("alice", iss="https://auth.example", aud="streamlimit")
    assert strict.verify(good).user_id == "alice"
    for claims in ({"aud": "streamlimit"}, {"iss": "https://auth.example"}, {"iss": "x", "aud": "streamlimit"}):
        assert reason_of(strict, make_token("alice", **claims)) == ("invalid_token", "claims")


@pytest.mark.parametrize(
    "token", ["", "not-a-jwt", "a.b.c", "W10.e30.", "bnVsbA.e30.", "!!!.e30.", 42, None, {"sub": "alice"}]
)
def test_garbage_is_an_invalid_token(verifier: TokenVerifier, token: object) -> None:
    code, _ = reason_of(verifier, token)
    assert code == "invalid_token"


def test_a_token_verified_before_still_expires_on_time() -> None:
    strict = TokenVerifier(TOKEN_SECRETS, leeway_seconds=0)
    token = make_token("alice", expires_in=1)
    assert strict.verify(token).user_id == "alice"
    assert strict.verify(token).user_id == "alice"  # remembered
    time.sleep(1.1)
    assert reason_of(strict, token) == ("token_expired", "expired")


def test_a_token_not_yet_valid_is_refused_until_its_nbf(verifier: TokenVerifier) -> None:
    token = make_token("alice", nbf=int(time.time()) + 120)
    assert reason_of(verifier, token) == ("invalid_token", "claims")
    assert reason_of(verifier, token) == ("invalid_token", "claims")


def test_a_tampered_copy_of_a_verified_token_is_refused(verifier: TokenVerifier) -> None:
    token = make_token("alice", maxStreams=1)
    assert verifier.verify(token).max_streams == 1
    header, _payload, signature = token.split(".")
    forged_payload = b64(json.dumps({"sub": "alice", "maxStreams": 50, "exp": int(time.time()) + 300}).encode())
    assert reason_of(verifier, f"{header}.{forged_payload}.{signature}") == ("invalid_token", "signature")


class Clock:
    """A clock the test moves by hand (seconds since 1970)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_remembered_token_is_not_verified_again() -> None:
    strict = TokenVerifier(TOKEN_SECRETS)
    token = make_token("alice")
    # The same claims object: the second use read the cache, not the signature.
    assert strict.verify(token) is strict.verify(token)
    assert TokenVerifier(TOKEN_SECRETS).verify(token) is not strict.verify(token)  # one cache per verifier


def test_a_remembered_token_is_usable_until_exp_plus_the_leeway_and_no_longer() -> None:
    clock = Clock()
    strict = TokenVerifier(TOKEN_SECRETS, leeway_seconds=30, clock=clock)
    token = make_token("alice", exp=int(clock.now) + 10)
    assert strict.verify(token).user_id == "alice"
    clock.now = int(clock.now) + 39.5  # past exp, within the leeway
    assert strict.verify(token).user_id == "alice"
    clock.now += 0.5  # exp + leeway: refused, as a token seen for the first time would be
    assert reason_of(strict, token) == ("token_expired", "expired")
    assert reason_of(TokenVerifier(TOKEN_SECRETS, leeway_seconds=30, clock=clock), token) == (
        "token_expired",
        "expired",
    )


def test_a_remembered_token_is_refused_before_nbf_minus_the_leeway() -> None:
    clock = Clock()
    strict = TokenVerifier(TOKEN_SECRETS, leeway_seconds=30, clock=clock)
    start = int(clock.now)
    token = make_token("alice", nbf=start + 20)
    clock.now = start
    assert strict.verify(token).user_id == "alice"  # within the leeway of its nbf
    clock.now = start - 11  # a clock set back: nbf - leeway is now ahead
    assert reason_of(strict, token) == ("invalid_token", "claims")


@pytest.mark.parametrize(
    "claims",
    [{"maxStreams": 51}, {"plan": "basic\u0000"}, {"sid": ""}, {"iat": "123"}, {"exp": 10**400}],
)
def test_a_token_refused_for_its_claims_is_refused_every_time(verifier: TokenVerifier, claims: dict) -> None:
    token = make_token("alice", **claims)
    assert reason_of(verifier, token) == ("invalid_token", "claims")
    assert reason_of(verifier, token) == ("invalid_token", "claims")


def test_a_token_remembered_by_a_lax_verifier_is_checked_by_a_strict_one() -> None:
    # Settings changes build a new verifier (heartbeat/services.py): the cache goes with the old one.
    token = make_token("alice")
    assert TokenVerifier(TOKEN_SECRETS).verify(token).user_id == "alice"
    assert reason_of(TokenVerifier(TOKEN_SECRETS, issuer="https://auth.example"), token) == ("invalid_token", "claims")


def test_the_cache_is_bounded_and_forgets_the_oldest_token_first() -> None:
    small = TokenVerifier(TOKEN_SECRETS, cache_size=3)
    tokens = [make_token(f"user{n}") for n in range(4)]
    first = [small.verify(token) for token in tokens]
    # The fourth pushed the first out: it is verified again (a new claims object); the others are remembered.
    assert small.verify(tokens[0]) is not first[0]
    assert small.verify(tokens[0]) == first[0]
    assert [small.verify(token) is claims for token, claims in zip(tokens[2:], first[2:], strict=True)] == [True, True]
    assert small.verify(tokens[1]) is not first[1]  # pushed out when the first came back


# --- Each failure's reason (the metric's label) and message (the player's log line) ------------


def signed_hs256(header: dict, payload_segment: str) -> str:
    """A token with this header and raw payload segment, signed with the test key k1."""
    head = b64(json.dumps(header).encode())
    signature = b64(
        hmac.new(TOKEN_SECRETS["k1"].encode(), f"{head}.{payload_segment}".encode(), hashlib.sha256).digest()
    )
    return f"{head}.{payload_segment}.{signature}"


@pytest.mark.parametrize(
    ("make", "code", "reason"),
    [
        (lambda: "", "invalid_token", "malformed"),
        (lambda: "!!!.e30.", "invalid_token", "malformed"),  # the header is not base64 JSON
        (lambda: "W10.e30.", "invalid_token", "malformed"),  # the header is JSON, but a list
        (lambda: signed_hs256({"alg": "HS256", "kid": "k1"}, "not-json"), "invalid_token", "malformed"),
        (lambda: make_token("alice", kid="unknown", secret=TOKEN_SECRETS["k1"]), "invalid_token", "unknown_kid"),
        (lambda: make_token("alice", kid="k1", secret=TOKEN_SECRETS["k2"]), "invalid_token", "signature"),
        (lambda: make_token("alice", expires_in=-120), "token_expired", "expired"),
        (lambda: make_token("alice", nbf=int(time.time()) + 600), "invalid_token", "claims"),
        (lambda: make_token(""), "invalid_token", "claims"),
        (lambda: make_token("alice", sid=""), "invalid_token", "claims"),
        (lambda: make_token("alice", maxStreams=51), "invalid_token", "claims"),
        (lambda: make_token("alice", plan=""), "invalid_token", "claims"),
    ],
    ids=[
        "empty",
        "header not json",
        "header a list",
        "payload not json",
        "unknown kid",
        "wrong key",
        "expired",
        "not yet valid",
        "bad sub",
        "bad sid",
        "bad maxStreams",
        "bad plan",
    ],
)
def test_every_failure_has_its_reason_and_a_message_that_says_what_is_wrong(
    verifier: TokenVerifier, make: Callable[[], str], code: str, reason: str
) -> None:
    # Made now, not when the tests were collected: a token made then may have expired since.
    with pytest.raises(TokenError) as caught:
        verifier.verify(make())
    assert (caught.value.code, caught.value.reason) == (code, reason)
    # A sentence about the token, for the player's log and support: never empty, never mangled.
    assert caught.value.message.startswith("The token")


def test_the_limits_of_the_claims_are_allowed(verifier: TokenVerifier) -> None:
    claims = verifier.verify(make_token("u" * 128, sid="s" * 128, maxStreams=50, plan="p" * 128))
    assert claims == PlaybackClaims("u" * 128, "s" * 128, 50, "p" * 128)
    assert verifier.verify(make_token("alice", maxStreams=1)).max_streams == 1


def test_a_secret_may_contain_equals_signs_and_empty_items_are_skipped() -> None:
    padded = "x" * 30 + "=="  # base64 secrets end with "="
    assert parse_hs256_keys(f"a={padded},,b=" + "y" * 32) == {"a": padded, "b": "y" * 32}
    with pytest.raises(ValueError, match="item 2 must be kid=secret"):
        parse_hs256_keys("a=" + "x" * 32 + ",no-secret-here")


def test_plan_limits_skip_empty_items_allow_50_and_refuse_a_second_equals_sign() -> None:
    assert parse_plan_limits("basic=1,,premium=50") == {"basic": 1, "premium": 50}
    for bad, says in (("basic=1=2", "whole number"), ("basic", "plan=limit"), ("basic=51", "between 1 and 50")):
        with pytest.raises(ValueError, match=says):
            parse_plan_limits(bad)


def test_each_bad_jwks_is_refused_saying_why(tmp_path: Path, public_keys) -> None:
    good = jwks_of(public_keys)
    private = json.loads(RSAAlgorithm.to_jwk(public_keys["rsa-1"][0], as_dict=False))  # type: ignore[arg-type]
    cases = [
        ({"keys": [good["keys"][0], {**private, "kid": "p"}]}, "key 2 is a private or secret key"),
        ({"keys": [{"kty": "oct", "k": b64(b"x" * 32), "kid": "s"}]}, "key 1 is a private or secret key"),
        ({"keys": [{k: v for k, v in good["keys"][0].items() if k != "kid"}]}, "key 1 has no kid"),
        ({"keys": [1]}, "key 1 is not a JSON object"),
        ([1, 2], "must be a JWKS"),
        ({"keys": [{"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "bad"}]}, "usable keys"),
        (
            {"keys": [good["keys"][0], {"kty": "EC", "crv": "P-999", "x": "AA", "y": "AA", "kid": "bad"}]},
            "some keys are unusable",
        ),
        ({"keys": [good["keys"][0], good["keys"][0]]}, "given twice"),
    ]
    path = tmp_path / "jwks.json"
    for document, says in cases:
        path.write_text(json.dumps(document))
        with pytest.raises(ValueError, match=says) as caught:
            load_jwks(str(path))
        assert str(caught.value).startswith(str(path)), caught.value


def test_a_token_whose_nbf_has_passed_is_valid_and_stays_valid(verifier: TokenVerifier) -> None:
    token = make_token("alice", nbf=int(time.time()) - 60)
    assert verifier.verify(token).user_id == "alice"
    assert verifier.verify(token).user_id == "alice"  # remembered, nbf and all
