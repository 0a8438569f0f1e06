"""The fleet view: audit the account, then plan a remedy per flagged user from live IAM and Vault facts.

Plain functions, shared by ``keyrotor remediate`` (which prints the plan before anything changes) and the
``audit-and-remediate`` flow (which re-plans live right before acting).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from keyrotor.adapters.connections import Connections
from keyrotor.adapters.credential_report import AccountsAudit
from keyrotor.audit.findings import AuditResult
from keyrotor.audit.settings import AuditSettings
from keyrotor.core.model import Phase
from keyrotor.remediation.plan import RECENT_USE, Action, UserFacts, UserPlan, plan_user, rules_by_user


def plan_fleet(
    connections: Connections,
    result: AuditResult,
    settings: AuditSettings,
    concurrency: int = 8,
    recent: timedelta = RECENT_USE,
) -> list[UserPlan]:
    """A plan per flagged user, from live facts read only for those users (never one call per account user)."""
    flagged = rules_by_user(result.findings)
    now = datetime.now(UTC)

    def plan_one(user: str) -> UserPlan:
        try:
            facts = gather_facts(connections, user)
        except Exception as error:  # noqa: BLE001 - one user that cannot be read never stops the others
            reason = f"cannot read its keys or its records ({type(error).__name__}: {error}); a person must look"
            return UserPlan(user, Action.NEEDS_PERSON, tuple(sorted(r.value for r in flagged[user])), reason)
        return plan_user(
            user,
            flagged[user],
            facts,
            now=now,
            recent=recent,
            max_age=timedelta(days=settings.max_key_age_days),
            unused=timedelta(days=settings.unused_days),
        )

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="plan") as pool:
        return list(pool.map(plan_one, sorted(flagged)))


def gather_facts(connections: Connections, user: str) -> UserFacts:
    """The user's keys, the key Vault names, and the last use of each active key."""
    keys = connections.iam.list_keys(user)
    records = connections.records(user)
    published = records.published()
    last_used = {key.key_id: connections.iam.last_used(key.key_id) for key in keys if key.active}
    state = records.load_state()
    ongoing = None
    if state is not None and not state.phase.terminal and state.phase is not Phase.DEACTIVATED:
        ongoing = f"{state.kind} {state.rotation_id} (phase {state.phase.value})"
    return UserFacts(keys, published.key_id if published else None, last_used, ongoing)


def plan_accounts(
    connections: Connections,
    audited: AccountsAudit,
    settings: AuditSettings,
    concurrency: int = 8,
    recent: timedelta = RECENT_USE,
) -> list[UserPlan]:
    """A plan per flagged user of every audited account, from live facts read in that account."""
    plans: list[UserPlan] = []
    for account, result in sorted(audited.results.items()):
        inside = connections.for_account(account, "remediate")
        plans += [plan.in_account(account) for plan in plan_fleet(inside, result, settings, concurrency, recent)]
    return plans
