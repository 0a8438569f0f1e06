"""The ``keyrotor`` command line, one module per command group; ``main`` assembles the app."""
