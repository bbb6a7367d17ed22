"""The capture core: context, ring buffer, ingestor and the instrumentation runtime.

``tidescope.capture`` is this package and, called, the test helper
``tidescope.capture(buffer_size=4096)`` (the same as :func:`tidescope.testing.capture`, the
spelling to use where a type checker reads the code).
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidescope.config import Config
    from tidescope.testing import Capture


class _CallablePackage(types.ModuleType):
    def __call__(self, config: Config | None = None, **settings: Any) -> Capture:
        from tidescope.testing import capture  # noqa: PLC0415 - testing imports this package

        return capture(config, **settings)


sys.modules[__name__].__class__ = _CallablePackage
