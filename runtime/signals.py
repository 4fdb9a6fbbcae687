"""A stop flag for SIGINT and SIGTERM: the loop checks it and finishes its work instead of dying mid-write."""

import signal


class StopFlag:
    """Falsy until SIGINT or SIGTERM arrives; `signal` names which. Install with signal.signal(s, flag)."""

    def __init__(self):
        self.signal: str | None = None

    def __call__(self, signum, _frame) -> None:
        self.signal = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal is not None
