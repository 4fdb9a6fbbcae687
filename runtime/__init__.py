"""The in-process machinery of the runtime, importable without starting any process."""

from runtime.headless import use_headless_backends

use_headless_backends()
