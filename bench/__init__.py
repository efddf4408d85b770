"""``chatctl bench``: the service measured end to end through its API (see bench.run).

Apart from the client library so that neither the library nor ``chatctl``'s
operator verbs carry benchmark code; ``chatctl`` only hands its flags, members
and TLS credentials to :func:`main`.
"""

from bench.plan import add_arguments, check_usage
from bench.run import BenchError, main

__all__ = ["BenchError", "add_arguments", "check_usage", "main"]
