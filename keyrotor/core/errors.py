"""One root exception; each subclass says what an operator has to do, and carries the CLI's exit code.

AWS ``ClientError`` codes and hvac exceptions are translated into these once, at the boundary
(:mod:`keyrotor.adapters.iam`, :mod:`keyrotor.adapters.vault`), so flows and tasks only ever see keyrotor errors.
"""

from __future__ import annotations

from pydantic import ValidationError


class KeyrotorError(Exception):
    """Root of every error keyrotor raises on purpose. Messages never contain secrets."""

    state_name = "Failed"
    exit_code = 1


class ConfigurationError(KeyrotorError):
    """Bad input or settings (a duration that does not parse, an impossible combination)."""

    state_name = "Bad input"
    exit_code = 2


class PreconditionFailed(KeyrotorError):
    """The world is not in a state where the step may safely act (no such user, no free key slot...)."""

    state_name = "Refused"
    exit_code = 3


class RotationConflict(KeyrotorError):
    """Someone else is rotating this user, or changed the record under us (check-and-set failed)."""

    state_name = "Conflict"
    exit_code = 4


class VerificationFailed(KeyrotorError):
    """The new key never authenticated; it has been deleted and the old key is untouched."""

    state_name = "Verification failed"
    exit_code = 5


class StillInUse(KeyrotorError):
    """The old key was still being used at the deadline: both keys stay active, an operator decides."""

    state_name = "Still in use"
    exit_code = 6


class Rejected(KeyrotorError):
    """An operator rejected the deactivation of the old key: the rotation ended with both keys active."""

    state_name = "Rejected"
    exit_code = 1


class VaultError(KeyrotorError):
    """Vault is unreachable, sealed, refused the token, or lacks the mount."""

    state_name = "Vault error"
    exit_code = 7


class VaultUnavailable(VaultError):
    """Vault stayed unreachable, sealed or failing for as long as keyrotor retried: an outage, not an answer."""

    state_name = "Vault unavailable"


class AwsError(KeyrotorError):
    """AWS refused a call for a reason that retrying will not fix (access denied, invalid input...)."""

    state_name = "AWS error"
    exit_code = 8


class AwsUnavailable(AwsError):
    """AWS kept failing (throttling, 5xx, unreachable) for as long as keyrotor retried: an outage, not an answer."""

    state_name = "AWS unavailable"


class CreateAnswerLost(AwsUnavailable):
    """CreateAccessKey got no clear answer: a key may have been created whose secret nobody received."""

    state_name = "AWS answer lost"


class PrefectUnavailable(KeyrotorError):
    """The Prefect server cannot be reached or refused a call (check PREFECT_API_URL and that it runs)."""

    state_name = "Prefect unreachable"
    exit_code = 9


class TransientError(KeyrotorError):
    """A failure worth retrying (throttling, 5xx, connection trouble). Only raised inside retry loops."""

    state_name = "Transient error"


class KeyNotAccepted(TransientError):
    """AWS answered that a new key's credentials are not valid: propagation delay at first, a bad key if it lasts."""

    state_name = "Key not accepted"


class RollbackImpossible(PreconditionFailed):
    """The old key no longer exists (deleted after its grace period), so there is nothing to return to."""

    state_name = "Rollback impossible"


def error_from_state(name: str | None, message: str | None) -> KeyrotorError:
    """The error a flow run ended with, rebuilt from its final state's name and message (see
    :func:`keyrotor.flows.refused`), so a caller that only sees the run's state gets the same type and exit code.
    The name is looked up in one table, like hvac's HTTP statuses; a run that failed another way (a bug, a crash) is
    a plain KeyrotorError with its message."""
    text = message or "the flow run failed without a message"
    return _BY_STATE_NAME.get(name or "", KeyrotorError)(text)


def _all_errors(root: type[KeyrotorError]) -> list[type[KeyrotorError]]:
    return [root, *(kind for sub in root.__subclasses__() for kind in _all_errors(sub))]


def describe_invalid(error: Exception, options: bool = False) -> str:
    """A rejected setting or option as one line for the operator: ``field: message; field: message``.

    pydantic's own text spans lines and names its internals; ``options`` names fields as command-line options
    (``quiet-period`` for ``quiet_period``).
    """
    if not isinstance(error, ValidationError):
        return str(error)
    problems = []
    for issue in error.errors():
        where = ".".join(str(part) for part in issue.get("loc", ()))
        if options:
            where = where.replace("_", "-")
        message = str(issue["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


#: Each error's Prefect state name (``Failed`` runs named "Still in use", "Bad input"...), and back.
_BY_STATE_NAME: dict[str, type[KeyrotorError]] = {kind.state_name: kind for kind in _all_errors(KeyrotorError)}
