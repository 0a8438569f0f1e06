"""``python -m keyrotor`` is the ``keyrotor`` command."""

from keyrotor.cli.main import app

if __name__ == "__main__":
    app(prog_name="keyrotor")
