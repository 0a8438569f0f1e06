"""The development stack, apart from what a production install runs: moto as IAM/STS, an OpenBao dev server as
Vault, PostgreSQL and a Prefect server, on loopback ports.

``service.py`` says what a service is (a process on a port that starts, answers and stops); ``catalog.py`` has one
class per service; ``services.py`` runs them together as a ``LocalStack``; ``processes.py`` is the process and port
plumbing. moto runs as ``moto_server.py`` with ``moto_gate.py`` (refuses the keys AWS refuses), ``moto_controls.py``
(local-only controls: back-dating and seeding) and ``moto_patches.py`` (answers closer to AWS's). ``postgres.py``
relocates the embedded PostgreSQL, ``seed.py`` seeds users, ``simulated_apps.py`` plays the applications,
``faults.py`` injects faults, ``demo.py`` tells the whole story, ``cli.py`` is ``keyrotor stack``.
"""
