"""The worker: runs jobs and serves the Hub over Pyro5 on a Unix socket."""
