"""Scaling out on Ray: episodes collected by actors (`collect`), with an embedded local Ray by default."""


class ClusterError(RuntimeError):
    """No Ray cluster where one was asked for."""
