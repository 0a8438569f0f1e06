"""How and when keyrotor's flows run: deployment definitions shared by ``keyrotor serve`` and ``prefect.yaml``."""
