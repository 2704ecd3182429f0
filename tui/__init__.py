"""The ``alps-dashboard`` live view of jobs."""

# Seconds between two fetches of the job list. It is here rather than in the
# poller so that the command line can show it without importing the client.
POLL_INTERVAL = 0.5
