"""ALPS, the Arbitrary Linux Process Service: a job runner for Linux hosts."""

__version__ = "0.1.0"
