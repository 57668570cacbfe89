"""Print ``demo=<secret>``: an HS256 playback-token key for `make run`'s demo, kept in the checkout's var/.

``make run`` uses it when no ``PLAYBACK_TOKEN_KEYS`` is set, with
``PLAYBACK_TOKENS_REQUIRED=false``, so the demo page can get tokens (and show
an account's screens) while plain requests without a token, such as the
README's curl example, still work. The secret never leaves this machine's
var/ folder; production sets its own keys.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def dev_token_key(var_dir: Path) -> str:
    """The key pair ``demo=<secret>``, made once into ``var_dir/dev_token_key``."""
    key_file = var_dir / "dev_token_key"
    if not key_file.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_hex(32), encoding="ascii")
    return f"demo={key_file.read_text(encoding='ascii').strip()}"


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print(dev_token_key(Path(os.environ.get("STREAMLIMIT_VAR_DIR", root / "var"))))
    sys.exit(0)
