"""Staff actions on live state and the limit policy, each written to the audit trail.

Shared by the dashboard views and the management commands, so an eviction or a
limit change is audited the same way wherever it comes from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from dashboard.models import AuditRecord, SharingMark
from heartbeat.limiter.limits import MAX_REASON_LENGTH
from heartbeat.limiter.metrics import EVICTIONS
from heartbeat.limiter.policy_store import PolicyRecord
from heartbeat.limiter.read_models import UserLimit
from heartbeat.limiter.risk import NotSharingMark
from heartbeat.services import get_live_state, get_policy_store, get_stream_manager


def actor_name(actor: AbstractBaseUser | str) -> str:
    """Who did it, as the audit trail and the events name them: the staff username, or ``cli:<operator>``."""
    return actor if isinstance(actor, str) else actor.get_username()


def _audit(
    actor: AbstractBaseUser | str,
    action: str,
    user_id: str,
    session_id: str = "",
    detail: str = "",
    reason: str = "",
) -> None:
    who = {"actor_name": actor} if isinstance(actor, str) else {"actor": actor, "actor_name": actor.get_username()}
    AuditRecord.objects.create(
        **who,
        action=action,
        stream_user_id=user_id,
        session_id=session_id,
        detail=detail,
        reason=reason[:MAX_REASON_LENGTH],
    )


def evict_session(actor: AbstractBaseUser | str, user_id: str, session_id: str, reason: str = "") -> bool:
    """Evict one live session; True if it was live (else nothing changes). Audited either way."""
    was_live = bool(get_stream_manager().evict(user_id, session_id, actor=actor_name(actor)))
    EVICTIONS.inc(int(was_live))
    cooldown = get_stream_manager().eviction_cooldown_seconds
    _audit(
        actor,
        AuditRecord.Action.EVICT_SESSION,
        user_id,
        session_id,
        f"live; cool-down {cooldown} s" if was_live else "not live: nothing evicted, no cool-down",
        reason,
    )
    return was_live


def evict_all(actor: AbstractBaseUser | str, user_id: str, reason: str = "") -> list[str]:
    """Evict every live session of a user; returns their ids. Audited."""
    evicted = get_stream_manager().evict(user_id, actor=actor_name(actor))
    EVICTIONS.inc(len(evicted))
    detail = f"{len(evicted)} sessions: {', '.join(evicted)}"[:500]
    _audit(actor, AuditRecord.Action.EVICT_ALL, user_id, detail=detail, reason=reason)
    return evicted


def block_new_sessions(actor: AbstractBaseUser | str, user_id: str, minutes: int, reason: str = "") -> datetime:
    """Refuse the account's new sessions for ``minutes``; returns when the block ends. Audited."""
    until = get_stream_manager().block_new_sessions(user_id, minutes * 60, actor=actor_name(actor))
    _audit(
        actor,
        AuditRecord.Action.BLOCK_NEW,
        user_id,
        detail=f"for {minutes} min, until {until:%Y-%m-%d %H:%M} UTC",
        reason=reason,
    )
    return until


def unblock_new_sessions(actor: AbstractBaseUser | str, user_id: str) -> bool:
    """Lift a block on the account's new sessions; True if there was one. Audited when there was."""
    lifted = get_stream_manager().unblock_new_sessions(user_id, actor=actor_name(actor))
    if lifted:
        _audit(actor, AuditRecord.Action.UNBLOCK_NEW, user_id)
    return lifted


def set_limit(actor: AbstractBaseUser | str, user_id: str, limit: int | None) -> UserLimit:
    """Set (1..50) or clear (None) a user's limit override. Audited."""
    manager = get_stream_manager()
    before = get_live_state().get_limit(user_id)
    after = manager.set_limit_override(user_id, limit, actor=actor_name(actor))
    action = AuditRecord.Action.CLEAR_LIMIT if limit is None else AuditRecord.Action.SET_LIMIT
    _audit(actor, action, user_id, detail=f"limit {before.limit} -> {after.limit} (override {after.override})")
    return after


def apply_policy(actor: AbstractBaseUser, document: Any, *, expected_version: int, reason: str = "") -> PolicyRecord:
    """Put ``document`` in force as the next policy version, if ``expected_version`` is still the one in force.

    Raises ``PolicyInvalidError`` (nothing stored) or ``PolicyConflictError``
    (another version was applied since the page was read; nothing stored).
    Audited when applied. The store logs the change (one line per change).
    """
    record = get_policy_store().apply(
        document, applied_by=actor.get_username(), reason=reason, expected_version=expected_version
    )
    _audit(
        actor,
        AuditRecord.Action.APPLY_POLICY,
        "",
        detail=f"policy version {record.version} (was {expected_version or 'none: the settings decided'})",
        reason=reason,
    )
    return record


def mark_not_sharing(actor: AbstractBaseUser | str, user_id: str, reason: str = "") -> SharingMark:
    """Mark an account "not sharing" (its risk score drops from the next scoring on); audited.

    Marking an account already marked replaces the mark (who, when, why) and is audited again.
    """
    who = {"marked_by": None if isinstance(actor, str) else actor, "marked_by_name": actor_name(actor)}
    with transaction.atomic():
        SharingMark.objects.filter(stream_user_id=user_id).delete()
        mark = SharingMark.objects.create(stream_user_id=user_id, reason=reason[:MAX_REASON_LENGTH], **who)
        _audit(actor, AuditRecord.Action.MARK_NOT_SHARING, user_id, reason=reason)
    return mark


def clear_not_sharing_mark(actor: AbstractBaseUser | str, user_id: str, reason: str = "") -> bool:
    """Clear an account's "not sharing" mark; True if there was one. Audited when there was."""
    with transaction.atomic():
        deleted, _ = SharingMark.objects.filter(stream_user_id=user_id).delete()
        if deleted:
            _audit(actor, AuditRecord.Action.CLEAR_NOT_SHARING, user_id, reason=reason)
    return bool(deleted)


def not_sharing_marks() -> dict[str, NotSharingMark]:
    """Every standing mark, by user id, as the risk score takes them."""
    return {
        mark.stream_user_id: NotSharingMark(mark.marked_by_name, mark.marked_at)
        for mark in SharingMark.objects.only("stream_user_id", "marked_by_name", "marked_at")
    }
