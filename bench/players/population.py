"""The simulated players: accounts, their sessions, and the order their requests come in.

Each account has 1, 2 or 3 sessions (25% / 40% / 35%: 2.1 sessions per
account on average, so 200,000 accounts give about 420,000 sessions) and a
phase ``u`` in [0, 1). Session ``k`` of an account with ``n`` sessions beats
at phase ``u + k / n``: one heartbeat per session per interval, the sessions
spread evenly over the interval as players that started at random times are,
and the sessions of one account at least ``interval / 3`` apart. The wheel is
every session sorted by phase; at an offered rate ``R`` it turns once every
``sessions / R`` seconds (the interval of the run).

Beside the wheel:

- churn: at a tick, with probability ``churn_share``, the session leaves
  (``POST /heartbeat/stop``) and a new session of the same account takes its
  place: its first heartbeat comes 1/12 of an interval later (so that
  arrivals start within a run of a few minutes, where a whole interval may be
  longer than the run), then it beats in the slot's phase; arrivals and
  departures therefore run at ``churn_share x R`` per second each;
- refusals: every ``1 / refused_share``-th request is a new session of an
  account that already plays 3 (the default limit), so it is refused (400);
  the account is the one whose phase is 1/6 of an interval past the wheel's
  position, half-way between two of its own sessions' heartbeats.

So no account is heard twice within ``interval / 12``; ``min_gap_seconds``
gives that gap for a rate, and the runner keeps it at 1 s or more.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections import deque
from dataclasses import dataclass

LIMIT = 3  # the service's default limit: an account with 3 live sessions refuses a fourth
SESSION_MIX = ((1, 0.25), (2, 0.40), (3, 0.35))  # sessions per account, share of accounts
# Kinds of request, and the answer each must get.
REPEAT, FIRST, STOP, REFUSED = "repeat", "first", "stop", "refused"
KINDS = (REPEAT, FIRST, STOP, REFUSED)
# Where a refusal goes: half-way between two of a 3-session account's heartbeats (1/3 apart).
REFUSAL_SHARE = 1 / 6
# How far past its place a refusal may go (when refusals come faster than full accounts pass).
REFUSAL_WINDOW = 1 / 24
# Where a new session's first heartbeat goes after its predecessor's stop: half-way to the refusal.
ARRIVAL_SHARE = 1 / 12
# The smallest part of an interval between two requests of one account.
GAP_SHARE = ARRIVAL_SHARE


@dataclass(frozen=True)
class Request:
    """One request to send: its kind, its path and its JSON body."""

    kind: str
    path: str
    body: bytes
    slot: int = -1  # the wheel slot of a stop or first heartbeat (see Population.unsent)


def user_id(account: int, salt: str) -> str:
    """The user id of an account (the salt keeps two runs' ids apart)."""
    return f"viewer-{salt}-{account:07d}"


def session_id(account: int, index: int, generation: int, salt: str) -> str:
    """The id of an account's ``index``-th session slot, in its ``generation``-th life (0: seeded)."""
    return f"{salt}{account:08x}-{index}-{generation:04x}-player-session"


def stream_id(account: int) -> str:
    """The title an account plays (5,000 titles)."""
    return f"title-{account % 5000:05d}"


def heartbeat_body(user: str, stream: str, session: str) -> bytes:
    """The JSON body the player library sends (heartbeat/static/streamlimit/player.js)."""
    return b'{"userId":"%s","streamId":"%s","sessionId":"%s"}' % (user.encode(), stream.encode(), session.encode())


def stop_body(user: str, stream: str, session: str) -> bytes:
    """The body of the player library's stop."""
    return heartbeat_body(user, stream, session)


class Population:
    """Accounts and sessions, and the endless, deterministic sequence of their requests."""

    def __init__(
        self, accounts: int, *, churn_share: float = 0.01, refused_share: float = 0.05, seed: int = 42, salt: str = "b"
    ) -> None:
        if accounts < 1:
            raise ValueError("accounts must be at least 1")
        if not 0 <= churn_share < 1 or not 0 <= refused_share < 0.5:
            raise ValueError("churn_share must be in [0, 1) and refused_share in [0, 0.5)")
        self.accounts = accounts
        self.churn_share = churn_share
        self.refused_share = refused_share
        self.salt = salt
        self.draw = random.Random(seed)
        self.counts = array("b")
        phases = array("d")
        edges = [(count, sum(share for _, share in SESSION_MIX[: i + 1])) for i, (count, _) in enumerate(SESSION_MIX)]
        for _ in range(accounts):
            pick = self.draw.random()
            n = next((count for count, edge in edges if pick < edge), LIMIT)
            self.counts.append(n)
            phases.append(self.draw.random())
        # The wheel: (phase, account, index) for every session, in phase order.
        wheel = sorted(
            ((phases[a] + k / self.counts[a]) % 1.0, a, k) for a in range(accounts) for k in range(self.counts[a])
        )
        self.slot_account = array("i", (a for _, a, _ in wheel))
        self.slot_index = array("b", (k for _, _, k in wheel))
        del wheel
        # Accounts at the limit, by the phase at which a refusal of theirs is sent.
        full = sorted(((phases[a] + REFUSAL_SHARE) % 1.0, a) for a in range(accounts) if self.counts[a] == LIMIT)
        self.refusal_phase = array("d", (p for p, _ in full))
        self.refusal_account = array("i", (a for _, a in full))
        self.generation: dict[int, int] = {}  # slot -> its generation, for the slots that churned
        self.leaving: dict[int, int] = {}  # slot -> account: stopped, its successor not heard yet
        self.leaving_accounts: dict[int, int] = {}  # account -> how many of its slots are between lives
        self.arrivals: deque[tuple[int, int]] = deque()  # (wheel tick it is due at, slot): first heartbeats to send
        self.cursor = 0  # the next slot of the wheel
        self.ticks = 0  # wheel ticks so far
        self.gap = max(1, round(self.sessions * GAP_SHARE))  # wheel ticks between two requests of one account
        self.heard: dict[int, int] = {}  # account -> wheel tick of its latest request
        self.refusals = 0
        self.emitted = 0
        self.refused_every = round(1 / refused_share) if refused_share else 0

    @property
    def sessions(self) -> int:
        """Sessions in the wheel (one per slot)."""
        return len(self.slot_account)

    def mix(self) -> dict[str, int]:
        """How many accounts have 1, 2 and 3 sessions."""
        return {str(n): sum(1 for c in self.counts if c == n) for n, _ in SESSION_MIX}

    def seeded_sessions(self) -> list[tuple[str, str, str]]:
        """(user, stream, session) of every session as first seeded (generation 0)."""
        return [
            (user_id(a, self.salt), stream_id(a), session_id(a, k, 0, self.salt))
            for a, n in enumerate(self.counts)
            for k in range(n)
        ]

    def interval_seconds(self, rate: float) -> float:
        """Seconds between two heartbeats of one session when the wheel's requests go at ``rate`` per second."""
        wheel_rate = rate * (1 - self.refused_share)
        return self.sessions / wheel_rate if wheel_rate > 0 else float("inf")

    def min_gap_seconds(self, rate: float) -> float:
        """The shortest time between two requests of one account at ``rate`` (see the module's docstring)."""
        return self.interval_seconds(rate) * GAP_SHARE

    def max_rate(self, min_gap_seconds: float = 1.0) -> float:
        """The highest rate at which no account is heard twice within ``min_gap_seconds``."""
        return self.sessions * GAP_SHARE / min_gap_seconds / (1 - self.refused_share)

    def next(self) -> Request:
        """The next request of the sequence."""
        self.emitted += 1
        if self.refused_every and self.emitted % self.refused_every == 0:
            refusal = self._refusal()
            if refusal is not None:
                return refusal
        if self.arrivals and self.arrivals[0][0] <= self.ticks:
            _, slot = self.arrivals.popleft()
            if slot in self.leaving:
                return self._arrival(slot)
        slot = self.cursor
        self.cursor = (self.cursor + 1) % self.sessions
        self.ticks += 1
        if slot in self.leaving:
            return self._arrival(slot)  # not heard yet (a tiny wheel): it is now
        account, index = self.slot_account[slot], self.slot_index[slot]
        self.heard[account] = self.ticks
        user, stream = user_id(account, self.salt), stream_id(account)
        generation = self.generation.get(slot, 0)
        session = session_id(account, index, generation, self.salt)
        if self.churn_share and self.draw.random() < self.churn_share:
            self.generation[slot] = generation + 1
            self.leaving[slot] = account
            self.leaving_accounts[account] = self.leaving_accounts.get(account, 0) + 1
            self.arrivals.append((self.ticks + self.gap, slot))
            return Request(STOP, "/heartbeat/stop", stop_body(user, stream, session), slot)
        return Request(REPEAT, "/heartbeat", heartbeat_body(user, stream, session))

    def _arrival(self, slot: int) -> Request:
        """The first heartbeat of the new session in ``slot``."""
        account = self.leaving.pop(slot)
        self.heard[account] = self.ticks
        left = self.leaving_accounts[account] - 1
        if left:
            self.leaving_accounts[account] = left
        else:
            del self.leaving_accounts[account]
        user, stream = user_id(account, self.salt), stream_id(account)
        session = session_id(account, self.slot_index[slot], self.generation[slot], self.salt)
        return Request(FIRST, "/heartbeat", heartbeat_body(user, stream, session), slot)

    def unsent(self, request: Request) -> None:
        """``request`` was dropped before it was sent (an overloaded server): undo what it changed here.

        A stop never sent leaves its session playing (its successor is not sent); a first heartbeat
        never sent is sent again next, so that its account does not keep a free slot.
        """
        slot = request.slot
        if request.kind == STOP and slot in self.leaving:
            account = self.leaving.pop(slot)
            self.generation[slot] -= 1
            left = self.leaving_accounts[account] - 1
            if left:
                self.leaving_accounts[account] = left
            else:
                del self.leaving_accounts[account]
        elif request.kind == FIRST:
            account = self.slot_account[slot]
            self.leaving[slot] = account
            self.leaving_accounts[account] = self.leaving_accounts.get(account, 0) + 1
            self.arrivals.appendleft((self.ticks, slot))

    def _refusal(self) -> Request | None:
        """A new session of a full account half-way between its heartbeats; None when there is none."""
        if not self.refusal_account:
            return None
        phase = self.cursor / self.sessions
        count = len(self.refusal_account)
        start = bisect.bisect_left(self.refusal_phase, phase)
        for step in range(count):
            i = (start + step) % count
            if (self.refusal_phase[i] - phase) % 1.0 > REFUSAL_WINDOW:
                return None  # no full account due now (a tiny wheel): a heartbeat instead
            account = self.refusal_account[i]
            # An account with a slot between two lives has room: it would be admitted. One heard
            # lately (refused a moment ago) is left alone too.
            if account not in self.leaving_accounts and self.ticks - self.heard.get(account, -self.gap) >= self.gap:
                self.refusals += 1
                self.heard[account] = self.ticks
                user = user_id(account, self.salt)
                session = f"{self.salt}{account:08x}-refused-{self.refusals:x}"
                return Request(REFUSED, "/heartbeat", heartbeat_body(user, stream_id(account), session))
        return None
