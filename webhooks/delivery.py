"""The delivery worker: reads the event streams with consumer groups and POSTs signed events.

One process (``manage.py deliver_events``) runs one ``EndpointRunner`` thread per
enabled endpoint, so an endpoint that hangs holds only its own thread. A runner
holds leases on its share of the streams (``webhooks/leases.py``); for each held
stream it reads its pending entries first (``XREADGROUP ... 0``), then new ones
(``>``), groups them by account and delivers each account's events one after
the other, accounts in parallel (``WEBHOOK_CONCURRENCY``). An event is
acknowledged (``XACK``) only once the endpoint answered 2xx or it went to the
dead letters, so a worker killed mid-batch loses nothing: its entries stay
pending and the next holder of the lease claims them (``XAUTOCLAIM``).

A failed event waits for its retry (``webhooks/schedule.py``) and holds back the
later events of its account for that endpoint (in order, per account); other
accounts go on. Its failed attempts and the time its next one is due are kept in
Redis beside the stream (``webhooks/retries.py``), so a worker that takes the
stream over (the holder stopped, crashed or was killed) continues the same
schedule: the event goes to the dead letters after WEBHOOK_MAX_AGE_HOURS, with
every attempt counted, whichever workers made them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import structlog
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone
from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from heartbeat.limiter.events import STREAM_FIELD
from heartbeat.limiter.keys import KeyLayout
from webhooks import metrics
from webhooks.health import read_health, record_round
from webhooks.leases import Leases
from webhooks.models import DeadLetter, Endpoint
from webhooks.retries import RetryBook, RetryState
from webhooks.schedule import delay_after
from webhooks.sending import send_once
from webhooks.signing import Signer
from webhooks.streams import create_group, group_name
from webhooks.targets import BadUrlError, parse_url
from webhooks.transport import Answer, Poster

logger = structlog.get_logger(__name__)

# Pending entries read per stream and round; new ones are read only while fewer wait.
BATCH_SIZE = 200
# Idle rounds wait this long at most before reading the streams again.
IDLE_WAIT_SECONDS = 0.2
# How often a runner looks for dead letters staff asked to send again.
RETRY_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class DeliverySettings:
    """What a worker needs from the settings (WEBHOOK_*)."""

    timeout: float
    max_body_bytes: int
    allow_private: bool
    concurrency: int
    lease_seconds: float
    max_age_seconds: float
    retry_scale: float

    @classmethod
    def from_django(cls) -> DeliverySettings:
        """From django.conf.settings."""
        from django.conf import settings

        return cls(
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            max_body_bytes=settings.WEBHOOK_MAX_RESPONSE_BYTES,
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS,
            concurrency=settings.WEBHOOK_CONCURRENCY,
            lease_seconds=settings.WEBHOOK_LEASE_SECONDS,
            max_age_seconds=settings.WEBHOOK_MAX_AGE_HOURS * 3600,
            retry_scale=settings.WEBHOOK_RETRY_SCALE,
        )


@dataclass
class Entry:
    """One stream entry as read for one endpoint."""

    shard: int
    entry_id: str
    body: bytes | None  # None: the entry was trimmed away while pending
    event_id: str = ""
    event_type: str = ""
    account: str = ""
    at_ms: int = 0

    @classmethod
    def parse(cls, shard: int, entry_id: object, fields: dict | None) -> Entry:
        """From an XREADGROUP/XAUTOCLAIM reply; a garbled entry has no body (it is acknowledged and logged)."""
        text_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        raw = None
        if fields:
            raw = fields.get(STREAM_FIELD.encode(), fields.get(STREAM_FIELD))
        entry = cls(shard, text_id, None, at_ms=int(text_id.split("-", 1)[0]))
        if raw is None:
            # Trimmed from the stream while it waited (EVENTS_RETENTION_HOURS, EVENTS_MEMORY_BUDGET_MB).
            logger.warning("webhook_event_trimmed_before_delivery", entry_id=text_id)
            return entry
        body = raw if isinstance(raw, bytes) else str(raw).encode()
        try:
            event = orjson.loads(body)
            entry.event_id, entry.event_type = str(event["id"]), str(event["type"])
            data = event.get("data") or {}
            entry.account = str(data.get("userId", "")) if isinstance(data, dict) else ""
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("webhook_event_unreadable", entry_id=text_id)
            return entry
        entry.body = body
        return entry


@dataclass
class AccountOutcome:
    """What one account's turn in a round came to."""

    acked: list[tuple[int, str]] = field(default_factory=list)  # (shard, entry id)
    waiting: list[tuple[int, str, RetryState]] = field(default_factory=list)  # failed, to be tried again
    dead: list[tuple[Entry, RetryState]] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    last_error: str = ""


class EndpointRunner(threading.Thread):
    """Delivers the held streams to one endpoint, round after round, until stopped."""

    def __init__(
        self,
        endpoint: Endpoint,
        client: Redis | RedisCluster,
        layout: KeyLayout,
        leases: Leases,
        conf: DeliverySettings,
    ) -> None:
        super().__init__(name=f"webhook-endpoint-{endpoint.pk}", daemon=True)
        self.endpoint = endpoint
        self.client = client
        self.layout = layout
        self.leases = leases
        self.conf = conf
        self.workers = 1
        self.stopping = threading.Event()
        self.label = str(endpoint.pk)
        self.group = group_name(endpoint.pk)
        self.created_ms = int(endpoint.created_at.timestamp() * 1000)
        self.held: dict[int, float] = {}  # shard -> when its lease was last renewed (monotonic)
        # The retry states of the held streams: Redis' (RetryBook), read when a stream is taken over, then
        # written through; between take-overs this runner is the only writer of its held streams' states.
        self.retries: dict[tuple[int, str], RetryState] = {}
        self.book = RetryBook(client, layout, endpoint.pk, conf.max_age_seconds + conf.lease_seconds)
        self.signer = Signer(endpoint.secrets())
        self.pool = ThreadPoolExecutor(conf.concurrency, thread_name_prefix=f"webhook-{endpoint.pk}")
        self.local = threading.local()
        self._next_acquire = 0.0
        self._next_retry_poll = 0.0
        try:
            self.target = parse_url(endpoint.url)
        except BadUrlError:
            self.target = None

    def configure(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` (re-read from the database) can keep this runner (same URL and secrets)."""
        if endpoint.url != self.endpoint.url or endpoint.secrets() != self.endpoint.secrets():
            return False
        self.endpoint = endpoint  # the types, which apply from the next round
        return True

    def stop(self) -> None:
        """Finish the round and give the leases up."""
        self.stopping.set()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    busy = self.round()
                except RedisError as exc:
                    logger.warning("webhook_round_redis_error", endpoint=self.label, error=str(exc))
                    busy = False
                except Exception:  # a bug or the database down: say so, and go on after a pause
                    logger.exception("webhook_round_failed", endpoint=self.label)
                    busy = False
                if not busy:
                    self.stopping.wait(IDLE_WAIT_SECONDS)
        finally:
            for number in list(self.held):
                with contextlib.suppress(RedisError):  # else it expires on its own
                    self.leases.release(self.endpoint.pk, number)
            self.pool.shutdown(wait=True)
            connection.close()

    # --- leases -------------------------------------------------------------------

    def _keep_leases(self) -> None:
        now = time.monotonic()
        renew_every = self.conf.lease_seconds / 3
        for number, renewed in list(self.held.items()):
            if now - renewed >= renew_every:
                if self.leases.renew(self.endpoint.pk, number):
                    self.held[number] = now
                else:
                    del self.held[number]
        for key in [key for key in self.retries if key[0] not in self.held]:
            del self.retries[key]  # a stream handed over: its next holder reads the states from Redis
        share = self.leases.share(self.workers)
        while len(self.held) > share:  # more workers now: hand the extra streams over
            number = max(self.held)
            self.leases.release(self.endpoint.pk, number)
            del self.held[number]
        if len(self.held) < share and now >= self._next_acquire:
            self._next_acquire = now + 1.0
            free = [n for n in range(self.layout.activity_shards) if n not in self.held]
            for number in self.leases.acquire(self.endpoint.pk, free, share - len(self.held)):
                self.held[number] = now
                self._take_over(number)

    def _take_over(self, number: int) -> None:
        """A newly held stream: make the group if needed, claim what another consumer left pending."""
        stream = self.layout.shards[number].events
        create_group(self.client, stream, self.endpoint.pk, self.created_ms)
        cursor = "0-0"
        while True:
            reply = self.client.xautoclaim(stream, self.group, self.leases.name, 0, start_id=cursor, count=500)
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if cursor == "0-0":
                break
        now_ms = int(time.time() * 1000)
        for entry_id, state in self.book.load(number, now_ms).items():
            self.retries[(number, entry_id)] = state
        # Consumers that left (a new name per process) and hold nothing: forget them, so the list stays short.
        for consumer in self.client.xinfo_consumers(stream, self.group):
            name = consumer["name"].decode() if isinstance(consumer["name"], bytes) else str(consumer["name"])
            if name != self.leases.name and not consumer["pending"] and consumer["idle"] > self.leases.lease_ms:
                self.client.xgroup_delconsumer(stream, self.group, name)

    # --- one round ----------------------------------------------------------------

    def round(self) -> bool:
        """One pass over the held streams; whether anything was delivered or waits to be."""
        self._keep_leases()
        self._serve_retry_requests()
        if not self.held:
            return False
        entries: list[Entry] = []
        for number in sorted(self.held):
            entries.extend(self._read(number))
        if not entries:
            return False
        by_account: dict[tuple[int, str], list[Entry]] = defaultdict(list)
        for entry in entries:
            by_account[(entry.shard, entry.account)].append(entry)
        deadline = time.monotonic() + self.conf.lease_seconds / 3
        outcomes = list(self.pool.map(lambda turn: self._deliver_account(turn, deadline), by_account.values()))
        self._finish(outcomes)
        return any(outcome.acked for outcome in outcomes)

    def _read(self, number: int) -> list[Entry]:
        stream = self.layout.shards[number].events
        consumer = self.leases.name
        pending = self.client.xreadgroup(self.group, consumer, {stream: "0"}, count=BATCH_SIZE)
        rows = pending[0][1] if pending else []
        if len(rows) < BATCH_SIZE:
            fresh = self.client.xreadgroup(self.group, consumer, {stream: ">"}, count=BATCH_SIZE - len(rows))
            rows = list(rows) + (list(fresh[0][1]) if fresh else [])
        return [Entry.parse(number, entry_id, fields) for entry_id, fields in rows]

    def _poster(self) -> Poster:
        poster = getattr(self.local, "poster", None)
        if poster is None:
            assert self.target is not None
            poster = Poster(
                self.target,
                timeout=self.conf.timeout,
                max_body_bytes=self.conf.max_body_bytes,
                allow_private=self.conf.allow_private,
            )
            self.local.poster = poster
        return poster

    def _deliver_account(self, turn: list[Entry], deadline: float) -> AccountOutcome:
        """One account's entries, in order, until one fails or waits for its retry."""
        outcome = AccountOutcome()
        endpoint = self.endpoint
        for entry in turn:
            if entry.body is None or not endpoint.wants(entry.event_type):
                outcome.acked.append((entry.shard, entry.entry_id))
                continue
            state = self.retries.get((entry.shard, entry.entry_id))
            now = time.monotonic()
            if (
                (state is not None and state.next_at_ms > time.time() * 1000)
                or now > deadline
                or self.stopping.is_set()
            ):
                break
            if state is None:
                metrics.EMITTED.labels(entry.event_type, self.label).inc()
            answer = self._send(entry)
            if answer.delivered:
                metrics.DELIVERED.labels(entry.event_type, self.label).inc()
                if answer.truncated:
                    metrics.TRUNCATED.labels(self.label).inc()
                outcome.acked.append((entry.shard, entry.entry_id))
                outcome.delivered += 1
                continue
            metrics.FAILED.labels(entry.event_type, self.label, answer.reason).inc()
            if answer.truncated:
                metrics.TRUNCATED.labels(self.label).inc()
            state = RetryState(state.attempts if state else 0)  # a new object: _finish writes it to Redis
            state.attempts += 1
            state.last_error = f"{answer.reason}: {answer.detail}"[:300]
            wait = delay_after(state.attempts, self.conf.retry_scale)
            outcome.failed += 1
            outcome.last_error = state.last_error
            if time.time() + wait - entry.at_ms / 1000 > self.conf.max_age_seconds:
                outcome.dead.append((entry, state))
                outcome.acked.append((entry.shard, entry.entry_id))
                metrics.DEAD.labels(entry.event_type, self.label).inc()
                continue  # the account's next events go on
            state.next_at_ms = int((time.time() + wait) * 1000)
            outcome.waiting.append((entry.shard, entry.entry_id, state))
            break
        return outcome

    def _send(self, entry: Entry) -> Answer:
        if self.target is None:
            return Answer(0, "bad_url", "the endpoint's URL does not parse")
        assert entry.body is not None
        return self._poster().post(entry.body, self.signer.headers(entry.event_id, entry.body))

    def _finish(self, outcomes: list[AccountOutcome]) -> None:
        """Dead letters first (in the database), then the acknowledgements and retry states, then the health.

        The states go with the ``XACK`` in one pipeline: a worker killed before it
        loses the attempts of this round only (the event is sent again, at-least-once).
        """
        dead = [pair for outcome in outcomes for pair in outcome.dead]
        if dead:
            self._write_dead_letters(dead)
        acked: dict[int, list[str]] = defaultdict(list)
        forgotten: dict[int, list[str]] = defaultdict(list)
        for outcome in outcomes:
            for number, entry_id in outcome.acked:
                acked[number].append(entry_id)
                if self.retries.pop((number, entry_id), None) is not None:
                    forgotten[number].append(entry_id)
        waiting: dict[int, dict[str, RetryState]] = defaultdict(dict)
        for outcome in outcomes:
            for number, entry_id, state in outcome.waiting:
                waiting[number][entry_id] = state
                self.retries[(number, entry_id)] = state
        pipe = self.client.pipeline(transaction=False)
        for number, entry_ids in acked.items():
            pipe.xack(self.layout.shards[number].events, self.group, *entry_ids)
            self.book.forget(pipe, number, forgotten[number])
        for number, states in waiting.items():
            self.book.save(pipe, number, states)
        if len(pipe):
            pipe.execute()
        delivered = sum(outcome.delivered for outcome in outcomes)
        failed = sum(outcome.failed for outcome in outcomes)
        error = next((outcome.last_error for outcome in outcomes if outcome.last_error), "")
        record_round(self.client, self.layout, self.endpoint.pk, delivered, failed, error)

    def _write_dead_letters(self, dead: list[tuple[Entry, RetryState]]) -> None:
        letters = [
            DeadLetter(
                endpoint_id=self.endpoint.pk,
                event_id=entry.event_id,
                event_type=entry.event_type,
                account=entry.account[:128],
                payload=(entry.body or b"").decode("utf-8", "replace"),
                attempts=state.attempts,
                last_error=state.last_error,
                event_at=datetime.fromtimestamp(entry.at_ms / 1000, UTC),
            )
            for entry, state in dead
        ]
        close_old_connections()
        # Two workers may dead-letter one event in the abnormal case (a lease lost mid-round): one row.
        DeadLetter.objects.bulk_create(letters, ignore_conflicts=True)
        logger.warning("webhook_dead_letters", endpoint=self.label, count=len(letters))

    # --- dead letters staff asked to send again ------------------------------------------

    def _claimable(self) -> Q:
        """Dead letters no live worker holds: never claimed, or claimed longer ago than a lease.

        A claim without a time (made by a worker of an earlier version) counts as expired.
        """
        expired = timezone.now() - timedelta(seconds=self.conf.lease_seconds)
        return Q(retry_claimed_by="") | Q(retry_claimed_at__isnull=True) | Q(retry_claimed_at__lt=expired)

    def _serve_retry_requests(self) -> None:
        """Send the dead letters staff asked to retry, each claimed by one worker for a lease.

        A claim (``retry_claimed_by``, ``retry_claimed_at``) lasts WEBHOOK_LEASE_SECONDS, longer
        than one send may take (the settings hold it above twice WEBHOOK_TIMEOUT_SECONDS): a claim
        older than that belongs to a worker that crashed or was killed mid-send, and another worker
        takes it, as a stream's lease expires (``webhooks/leases.py``). At worst the letter is sent twice.
        """
        now = time.monotonic()
        if now < self._next_retry_poll:
            return
        self._next_retry_poll = now + RETRY_POLL_SECONDS
        close_old_connections()
        asked = DeadLetter.objects.filter(
            self._claimable(), endpoint_id=self.endpoint.pk, retry_requested_at__isnull=False
        ).values_list("pk", flat=True)[:50]
        for pk in list(asked):
            if self.stopping.is_set():
                return
            # An atomic claim on either database: the one worker whose update matched sends it.
            claimed = DeadLetter.objects.filter(self._claimable(), pk=pk, retry_requested_at__isnull=False).update(
                retry_claimed_by=self.leases.name, retry_claimed_at=timezone.now()
            )
            if not claimed:
                continue
            letter = DeadLetter.objects.get(pk=pk)
            answer = send_once(self.endpoint, letter.event_id, letter.payload.encode())
            if answer.delivered:
                metrics.DELIVERED.labels(letter.event_type, self.label).inc()
                letter.delete()
                logger.info("webhook_dead_letter_delivered", endpoint=self.label, event_id=letter.event_id)
            else:
                metrics.FAILED.labels(letter.event_type, self.label, answer.reason).inc()
                # Only while the claim is still this worker's: else another took it over and decides.
                DeadLetter.objects.filter(pk=pk, retry_claimed_by=self.leases.name).update(
                    retry_requested_at=None,
                    retry_claimed_by="",
                    retry_claimed_at=None,
                    attempts=letter.attempts + 1,
                    last_error=f"{answer.reason}: {answer.detail}"[:300],
                    dead_at=timezone.now(),
                )


class DeliveryWorker:
    """One ``deliver_events`` process: a runner per enabled endpoint, kept in step with the database."""

    # How often the endpoints are re-read and the gauges refreshed.
    ENDPOINTS_EVERY_SECONDS = 2.0
    GAUGES_EVERY_SECONDS = 5.0

    def __init__(
        self, client: Redis | RedisCluster, layout: KeyLayout, name: str, conf: DeliverySettings | None = None
    ) -> None:
        self.client = client
        self.layout = layout
        self.name = name
        self.conf = conf or DeliverySettings.from_django()
        self.leases = Leases(client, layout, name, self.conf.lease_seconds)
        self.runners: dict[int, EndpointRunner] = {}

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; then finish the rounds and hand the leases back."""
        next_endpoints = next_gauges = 0.0
        logger.info("webhook_worker_started", worker=self.name)
        try:
            while not stop.is_set():
                now = time.monotonic()
                try:
                    workers = self.leases.register()
                    if now >= next_endpoints:
                        next_endpoints = now + self.ENDPOINTS_EVERY_SECONDS
                        self._sync_runners()
                    for runner in self.runners.values():
                        runner.workers = workers
                    if now >= next_gauges:
                        next_gauges = now + self.GAUGES_EVERY_SECONDS
                        self._update_gauges()
                except RedisError as exc:
                    logger.warning("webhook_worker_redis_error", worker=self.name, error=str(exc))
                stop.wait(min(0.5, self.conf.lease_seconds / 4))
        finally:
            for runner in self.runners.values():
                runner.stop()
            for runner in self.runners.values():
                runner.join()
            with contextlib.suppress(RedisError):
                self.leases.leave()
            logger.info("webhook_worker_stopped", worker=self.name)

    def _sync_runners(self) -> None:
        close_old_connections()
        wanted = {endpoint.pk: endpoint for endpoint in Endpoint.objects.filter(enabled=True)}
        for endpoint_id, runner in list(self.runners.items()):
            endpoint = wanted.get(endpoint_id)
            if endpoint is None or not runner.configure(endpoint) or not runner.is_alive():
                runner.stop()
                runner.join()
                del self.runners[endpoint_id]
        for endpoint_id, endpoint in wanted.items():
            if endpoint_id not in self.runners:
                runner = EndpointRunner(endpoint, self.client, self.layout, self.leases, self.conf)
                self.runners[endpoint_id] = runner
                runner.start()

    def _update_gauges(self) -> None:
        for endpoint_id in self.runners:
            health = read_health(self.client, self.layout, endpoint_id)
            metrics.OLDEST_UNDELIVERED.labels(str(endpoint_id)).set(health.oldest_undelivered_seconds)
            metrics.BACKLOG.labels(str(endpoint_id)).set(health.backlog)
