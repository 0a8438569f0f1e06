"""The waker: one long-lived service, in one process, for every parked rotation.

It has three jobs, one module each:

* :mod:`~keyrotor.waker.checks`: list Vault's waiting index, and for each rotation whose check is due read the
  watched key's last use (one IAM call) and decide with the same pure rule a run uses
  (:func:`keyrotor.core.decisions.check_quiet`). Still in use: record the look and when the next one is due.
  Quiet, or at the deadline: resume the rotation's suspended flow run, which starts again from the top and moves on.
* :mod:`~keyrotor.waker.recovery`: keep the promises a suspended run cannot keep itself: a pause from the Prefect UI
  (Suspended with a timeout, which Prefect turns into Failed when it passes) never expires and is recorded as a
  hold; a run whose process died with its runner or worker is scheduled again; the fleet's artifact stays current.
* :mod:`~keyrotor.waker.service`: the loop, and the lease that makes one waker the active one.

Prefect is reached only through an injected :class:`~keyrotor.adapters.prefect_runs.RunControl` and time through an
injected clock, so every branch is a unit test (``tests/unit/waker``).
"""
