"""Workflows (versioned DAGs), runs, tasks, dependencies, run data, input requests."""
