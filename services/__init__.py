"""The ALPS services: the worker and the HTTPS API."""
