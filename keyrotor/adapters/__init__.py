"""The outside world behind small typed interfaces: IAM and STS (with the credential report), Vault KV and its logins,
the durable rotation records kept in Vault, member accounts, and Prefect's run API.

Adapters import only :mod:`keyrotor.core` and :mod:`keyrotor.settings`; the steps in ``tasks/`` use them.
"""
