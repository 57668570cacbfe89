"""Cost of verifying one playback token, by algorithm: ``.venv/bin/python bench/token_verify.py``.

Times ``TokenVerifier.verify`` (header, key by kid, signature, claims: what a
request pays) for HS256, RS256, ES256 and EdDSA, with keys made here. Prints
the median of 7 rounds of 2,000 verifications, in microseconds per token.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "streamlimit.settings")

import django

django.setup()

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm  # noqa: E402

from heartbeat.tokens import TokenVerifier  # noqa: E402

ROUNDS, PER_ROUND = 7, 2000


def main() -> None:
    secret = os.urandom(32).hex()
    private = {
        "RS256": (rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm),
        "ES256": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
        "EdDSA": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
    }
    jwks = {
        "keys": [
            {**json.loads(algorithm.to_jwk(key.public_key())), "kid": name}
            for name, (key, algorithm) in private.items()
        ]
    }
    verifier = TokenVerifier({"HS256": secret}, jwks)
    claims = {"sub": "user-000001", "sid": "0a1b2c3d-4e5f", "plan": "premium", "exp": int(time.time()) + 3600}
    tokens = {"HS256": jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "HS256"})}
    for name, (key, _) in private.items():
        tokens[name] = jwt.encode(claims, key, algorithm=name, headers={"kid": name})
    print(f"TokenVerifier.verify, median of {ROUNDS} rounds of {PER_ROUND}:")
    for name, token in tokens.items():
        rounds = []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            for _ in range(PER_ROUND):
                verifier.verify(token)
            rounds.append((time.perf_counter() - start) / PER_ROUND * 1e6)
        print(f"  {name:6} {statistics.median(rounds):7.1f} us per token")


if __name__ == "__main__":
    main()
