"""Account remediation: what to do about each flagged user (``plan``, pure) and the live survey that gathers the facts
for it (``survey``). The ``audit-and-remediate`` flow acts on the plan."""
