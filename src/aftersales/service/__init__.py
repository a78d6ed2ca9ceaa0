"""Use cases: one command in, events out, inside a unit of work (the only place that commits)."""
