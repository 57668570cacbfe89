"""Cost of verifying one playback token, by algorithm: ``.venv/bin/python bench/token_verify.py``.

Times ``TokenVerifier.verify`` for HS256, RS256, ES256 and EdDSA, with keys
made here: the first verification of a token (header, key by kid, signature,
claims: each token is new), and a repeat of a token the process verified
before (a player's next heartbeat, when the same worker answers it: a dict
lookup and the time checks). Prints the median of 7 rounds, in microseconds.
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

from heartbeat.limiter.tokens import TokenVerifier  # noqa: E402

ROUNDS, PER_ROUND = 7, 500


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

    def token(name: str, n: int) -> str:
        claims = {"sub": f"user-{n:06d}", "sid": "0a1b2c3d-4e5f", "plan": "premium", "exp": int(time.time()) + 3600}
        key = secret if name == "HS256" else private[name][0]
        return jwt.encode(claims, key, algorithm=name, headers={"kid": name})

    print(f"TokenVerifier.verify, median of {ROUNDS} rounds of {PER_ROUND} tokens, microseconds per token:")
    for name in ("HS256", "RS256", "ES256", "EdDSA"):
        first, repeat = [], []
        for r in range(ROUNDS):
            tokens = [token(name, r * PER_ROUND + i) for i in range(PER_ROUND)]
            start = time.perf_counter()
            for t in tokens:
                verifier.verify(t)
            first.append((time.perf_counter() - start) / PER_ROUND * 1e6)
            start = time.perf_counter()
            for t in tokens:
                verifier.verify(t)
            repeat.append((time.perf_counter() - start) / PER_ROUND * 1e6)
        print(f"  {name:6} first {statistics.median(first):7.1f}   repeat {statistics.median(repeat):5.1f}")


if __name__ == "__main__":
    main()
