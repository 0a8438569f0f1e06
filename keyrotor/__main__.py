"""``python -m keyrotor`` is the ``keyrotor`` command."""

from keyrotor.cli import app

app(prog_name="keyrotor")
