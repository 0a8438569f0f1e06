"""What an operator does to rotations from outside their runs: look at one (``status``) or the fleet
(``fleet_status``), follow a served run (``follow``), pause and resume (``pause``). Used by the CLI and the flows;
imports adapters and core only."""
