"""The ``alps-dashboard`` live view of jobs."""
