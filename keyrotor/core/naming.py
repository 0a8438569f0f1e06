"""How keyrotor names and tags the flow runs of a user, so the Prefect UI lists a user's whole history. Pure.

Every run acting on a user is named after what it does (``rotate alice``, ``pause alice``, ``roll back alice``,
``delete old key of alice``, ``retire AKIA... of alice``; `` in 111122223333`` for an account named explicitly) and
tagged ``user:alice`` (and ``account:...``) from its creation: by keyrotor when it creates the run, by the run
itself when it starts (runs created from the UI's form).
"""

from __future__ import annotations


def user_tags(user_name: str, account_id: str | None = None) -> list[str]:
    """The tags of every flow run acting on a user: filter the UI's run list by them."""
    return [f"user:{user_name}", *([f"account:{account_id}"] if account_id else [])]


def run_title(verb: str, user_name: str, account_id: str | None = None, key_id: str | None = None) -> str:
    """``rotate alice``, ``retire AKIA... of alice in 111122223333``: what the run does, to whom."""
    who = f"{key_id} of {user_name}" if key_id else user_name
    return f"{verb} {who}" + (f" in {account_id}" if account_id else "")
