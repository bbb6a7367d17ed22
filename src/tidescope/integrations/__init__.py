"""Framework integrations: one line of setup turns a framework's requests, queries, tasks
and messages into tidescope events.

Each submodule is imported only when used (importing ``tidescope`` never imports a
framework), and each fails open: an error inside an integration is counted in
``tidescope.stats()["internal_errors"]`` and never reaches the application.
"""

from __future__ import annotations

from tidescope.capture._core import count_error

__all__ = ["count_error"]
