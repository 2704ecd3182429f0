"""Job processes: the spawner, the per-job supervisor and control groups."""
