"""The limiter's Lua scripts, one ``.lua`` file each, read once per process and called by EVALSHA.

Each file starts with its contract (KEYS, ARGV, reply). A rolling deploy
shares one Redis, so a contract only ever grows at the end of ARGV.
"""

from __future__ import annotations

from heartbeat.store.scripts import LuaScript

ADMIT = LuaScript.from_package(__name__, "admit")
RECORD_ACTIVITY = LuaScript.from_package(__name__, "record_activity")
RECORD_ACCOUNTS = LuaScript.from_package(__name__, "record_accounts")
RECORD_MINUTE = LuaScript.from_package(__name__, "record_minute")
END_SESSIONS = LuaScript.from_package(__name__, "end_sessions")
STOP = LuaScript.from_package(__name__, "stop")
EVICT = LuaScript.from_package(__name__, "evict")
APPLY_POLICY = LuaScript.from_package(__name__, "apply_policy")
RECORD_EVENTS = LuaScript.from_package(__name__, "record_events")
ALL_SCRIPTS = [
    ADMIT,
    RECORD_ACTIVITY,
    RECORD_ACCOUNTS,
    RECORD_MINUTE,
    END_SESSIONS,
    STOP,
    EVICT,
    APPLY_POLICY,
    RECORD_EVENTS,
]
