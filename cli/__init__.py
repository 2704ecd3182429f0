"""The ``alps`` command-line client."""
