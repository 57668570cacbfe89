"""Playback tokens: JWTs the streaming company's back end signs, verified here.

Keys are read at start-up only (``PLAYBACK_TOKEN_KEYS`` for HS256 secrets,
``PLAYBACK_TOKEN_JWKS_FILE`` for public keys); answering a request never
fetches anything. The header's ``kid`` picks one key, and only that key's own
algorithm is allowed for it: an allow-list mixing HS256 with a public-key
algorithm would let a token "signed" with the public key as an HMAC secret
through (and PyJWT raises ``InvalidKeyError``, which is not an
``InvalidTokenError``, for such tokens, so every ``PyJWTError`` is caught).

A little over 300 lines: the key loading, the verifier and the issuer (for
the demo and ``issue_token``) share the claim rules, which must not drift apart.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWKError,
    PyJWKSetError,
    PyJWTError,
)

from heartbeat.limiter.ids import class_name_error, id_error, quality_error
from heartbeat.limiter.limits import MAX_LIMIT, MIN_LIMIT

MIN_SECRET_BYTES = 32
# The public-key algorithms a JWKS key may use (HS256 keys come from PLAYBACK_TOKEN_KEYS only).
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
# Verified tokens remembered per process (a player sends the same token every heartbeat).
# About 9 MB per process at 20,000 (a token, its claims and two times: ~450 bytes).
# Past it the oldest entry goes, one per new token.
VERIFIED_CACHE_SIZE = 20_000
# The time claims (RFC 7519's NumericDate), taken as whole seconds since 1970 up to the
# last second of year 9999: a bigger number is no date, and would overflow a float.
TIME_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253_402_300_799


@dataclass(frozen=True)
class PlaybackClaims:
    """What a verified token says: the account, and optionally its session, limit and plan."""

    user_id: str
    session_id: str | None = None
    max_streams: int | None = None
    plan: str | None = None
    # The policy's inputs, when the back end vouches for them: they win over the body's.
    device_class: str | None = None
    device_id: str | None = None
    quality: str | None = None
    pool: str | None = None

    @property
    def has_policy_inputs(self) -> bool:
        """Whether the token names any of the policy's inputs (device class, device id, quality, pool)."""
        return any(v is not None for v in (self.device_class, self.device_id, self.quality, self.pool))

    @property
    def is_account_token(self) -> bool:
        """A token without ``sid`` speaks for the whole account (it may stop any of its sessions)."""
        return self.session_id is None


class TokenError(Exception):
    """A token that cannot be used: ``code`` for the player, ``reason`` for the metric."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def parse_hs256_keys(raw: str) -> dict[str, str]:
    """``kid=secret,kid2=secret2`` as a dict; each secret at least 32 bytes, kids unique.

    Raises ValueError saying what is wrong (never echoing a secret).
    """
    keys: dict[str, str] = {}
    for n, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            continue
        kid, sep, secret = item.partition("=")
        kid = kid.strip()
        if not sep or not kid:
            raise ValueError(f"item {n} must be kid=secret")
        if kid in keys:
            raise ValueError(f"kid {kid!r} is given twice")
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the secret of kid {kid!r} must be at least {MIN_SECRET_BYTES} bytes")
        keys[kid] = secret
    return keys


def load_jwks(path: str) -> dict[str, Any] | None:
    """The JWKS document in ``path`` (None for ""), checked: public keys with a kid and a known algorithm.

    Raises ValueError saying what is wrong.
    """
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    _jwks_keys(document, path)
    return document


def _jwks_keys(document: Any, path: str) -> dict[str, PyJWK]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError(f'{path} must be a JWKS: {{"keys": [...]}}')
    for n, entry in enumerate(document["keys"], start=1):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: key {n} is not a JSON object")
        if "d" in entry or entry.get("kty") == "oct":
            raise ValueError(f"{path}: key {n} is a private or secret key; the file holds public keys only")
        if not isinstance(entry.get("kid"), str) or not entry["kid"]:
            raise ValueError(f"{path}: key {n} has no kid")
    try:
        key_set = PyJWKSet.from_dict(document)
    except (PyJWKSetError, PyJWKError, PyJWTError) as error:
        raise ValueError(f"{path}: {error}") from None
    if len(key_set.keys) != len(document["keys"]):
        raise ValueError(f"{path}: some keys are unusable (unknown kty, crv or alg)")
    keys: dict[str, PyJWK] = {}
    for key in key_set.keys:
        if key.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
            raise ValueError(f"{path}: kid {key.key_id!r} uses {key.algorithm_name}; allowed: RS256, ES256, EdDSA")
        if key.key_id in keys:
            raise ValueError(f"{path}: kid {key.key_id!r} is given twice")
        keys[key.key_id] = key  # type: ignore[index]
    return keys


class TokenVerifier:
    """Verifies playback tokens against the keys configured at start-up."""

    def __init__(
        self,
        hs256_keys: Mapping[str, str],
        jwks: dict[str, Any] | None = None,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway_seconds: int = 30,
        cache_size: int = VERIFIED_CACHE_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys: dict[str, tuple[Any, list[str]]] = {
            kid: (secret.encode(), ["HS256"]) for kid, secret in hs256_keys.items()
        }
        for kid, key in (_jwks_keys(jwks, "the JWKS") if jwks is not None else {}).items():
            if kid in self._keys:
                raise ValueError(f"kid {kid!r} is both an HS256 key and a JWKS key")
            self._keys[kid] = (key, [key.algorithm_name])
        self.issuer = issuer or None
        self.audience = audience or None
        self.leeway_seconds = leeway_seconds
        self.cache_size = cache_size
        self._clock = clock
        # token -> (claims, usable from, usable until), the leeway included: the signature
        # and the claims of an identical string need no second check; the times still do,
        # at every use. What depends on the request (the body's userId and sessionId
        # against sub and sid) is checked by the caller on every request, cached or not.
        self._verified: dict[str, tuple[PlaybackClaims, float, float]] = {}

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (else tokens are off and the API is open)."""
        return bool(self._keys)

    @property
    def hs256_kids(self) -> list[str]:
        """The kids of the HS256 keys, in configuration order (the first signs ``issue_token``'s tokens)."""
        return [kid for kid, (_, algorithms) in self._keys.items() if algorithms == ["HS256"]]

    def verify(self, token: object) -> PlaybackClaims:
        """The claims of a valid token; raises TokenError otherwise (never another exception).

        A token verified before (the same string, so the same signature) is
        not verified again, but its ``exp`` and ``nbf`` are checked against
        the clock every time.
        """
        if not isinstance(token, str) or not token:
            raise TokenError("invalid_token", "malformed", "The token must be a non-empty string.")
        known = self._verified.get(token)
        if known is not None:
            claims, usable_from, usable_until = known
            if usable_from <= self._clock() < usable_until:
                return claims
            self._verified.pop(token, None)  # expired (or not yet valid): verified afresh, and refused
        claims, payload = self._verify(token)
        verified = self._verified
        if len(verified) >= self.cache_size:
            # The oldest entry: a dict keeps insertion order, so no LRU bookkeeping per request.
            # (Forgiving: under gthread workers another thread may change the dict meanwhile.)
            with contextlib.suppress(RuntimeError):
                verified.pop(next(iter(verified), None), None)
        # Both are whole numbers within MAX_NUMERIC_DATE (see _check_times): exact as floats.
        # The same bounds as _check_times: exp > now - leeway, nbf <= now + leeway.
        not_before = payload.get("nbf")
        verified[token] = (
            claims,
            float(not_before) - self.leeway_seconds if not_before is not None else float("-inf"),
            float(payload["exp"]) + self.leeway_seconds,
        )
        return claims

    def _verify(self, token: str) -> tuple[PlaybackClaims, dict[str, Any]]:
        kid = _unverified_kid(token)
        if not isinstance(kid, str) or kid not in self._keys:
            raise TokenError("invalid_token", "unknown_kid", "The token's key id (kid) is not one of ours.")
        key, algorithms = self._keys[kid]
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                # The times are checked in _check_times: PyJWT takes "123" and
                # overflows on 1e400 (an exception that is not a PyJWTError).
                options={"require": ["exp", "sub"], "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except ExpiredSignatureError:
            raise TokenError("token_expired", "expired", "The token has expired: ask for a new one.") from None
        except (InvalidAlgorithmError, InvalidKeyError):
            raise TokenError("invalid_token", "algorithm", "The token's algorithm is not allowed.") from None
        except InvalidSignatureError:
            raise TokenError("invalid_token", "signature", "The token's signature is not valid.") from None
        except DecodeError:
            raise TokenError("invalid_token", "malformed", "The token is not a valid JWT.") from None
        except PyJWTError as error:
            raise TokenError("invalid_token", "claims", f"The token's claims are not valid: {error}") from None
        self._check_times(payload)
        return self._claims(payload), payload

    def _check_times(self, payload: dict[str, Any]) -> None:
        """``exp``, ``nbf`` and ``iat``: whole numbers in range, and the token usable now (with the leeway)."""
        for name in TIME_CLAIMS:
            value = payload.get(name)
            if name in payload and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_NUMERIC_DATE
            ):
                raise TokenError(
                    "invalid_token",
                    "claims",
                    f"The token's {name} must be a whole number of seconds since 1970 (a NumericDate up to year 9999).",
                )
        now = self._clock()
        # The same comparisons as PyJWT's own, with the same words.
        if payload["exp"] <= now - self.leeway_seconds:
            raise TokenError("token_expired", "expired", "The token has expired: ask for a new one.")
        for name in ("nbf", "iat"):
            if name in payload and payload[name] > now + self.leeway_seconds:
                raise TokenError(
                    "invalid_token", "claims", f"The token's claims are not valid: The token is not yet valid ({name})"
                )

    @staticmethod
    def _claims(payload: dict[str, Any]) -> PlaybackClaims:
        def bad(message: str) -> TokenError:
            return TokenError("invalid_token", "claims", message)

        if error := id_error(payload["sub"]):
            raise bad(f"The token's sub is not a valid userId: {error}")
        sid = payload.get("sid")
        if sid is not None and (error := id_error(sid)):
            raise bad(f"The token's sid is not a valid sessionId: {error}")
        max_streams = payload.get("maxStreams")
        if max_streams is not None and (
            isinstance(max_streams, bool)
            or not isinstance(max_streams, int)
            or not MIN_LIMIT <= max_streams <= MAX_LIMIT
        ):
            raise bad(f"The token's maxStreams must be a whole number from {MIN_LIMIT} to {MAX_LIMIT}.")
        plan = payload.get("plan")
        # The plan is shown to staff, so it follows the id rule too.
        if plan is not None and (error := id_error(plan)):
            raise bad(f"The token's plan is not valid: {error}")
        inputs = {}
        for claim, rule in (
            ("deviceClass", class_name_error),
            ("deviceId", id_error),
            ("quality", quality_error),
            ("pool", class_name_error),
        ):
            value = payload.get(claim)
            if value is not None and (error := rule(value)):
                raise bad(f"The token's {claim} is not valid: {error}")
            inputs[claim] = value
        return PlaybackClaims(
            payload["sub"],
            sid,
            max_streams,
            plan,
            inputs["deviceClass"],
            inputs["deviceId"],
            inputs["quality"],
            inputs["pool"],
        )


def _unverified_kid(token: str) -> object:
    """The ``kid`` of the token's header, which only picks the key: PyJWT checks the whole header after.

    Read here with orjson rather than ``jwt.get_unverified_header``, which
    would decode the header a second time on every first verification.
    """
    segment = token.split(".", 1)[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise TokenError("invalid_token", "malformed", "The token is not a JWT.") from None
    if not isinstance(header, dict):
        raise TokenError("invalid_token", "malformed", "The token is not a JWT.")
    return header.get("kid")


def issue_token(
    kid: str,
    secret: str,
    user_id: str,
    *,
    ttl_seconds: int,
    session_id: str | None = None,
    plan: str | None = None,
    max_streams: int | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """An HS256 playback token, as the back end would issue it (for ``issue_token``, tests and demos).

    ``extra_claims``: more claims, such as the policy's ``deviceClass``, ``deviceId``, ``quality`` and ``pool``.
    """
    claims: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": int(now) + ttl_seconds}
    if session_id is not None:
        claims["sid"] = session_id
    if plan is not None:
        claims["plan"] = plan
    if max_streams is not None:
        claims["maxStreams"] = max_streams
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    claims.update(extra_claims or {})
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
