"""The procedures, as Prefect flows. They orchestrate the steps in :mod:`keyrotor.tasks`; they never call AWS or Vault."""
