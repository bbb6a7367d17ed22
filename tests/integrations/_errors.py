"""``internal_errors()``: failures counted inside capture since the current test began.

The core's counter is for the whole process (a failure is never forgotten); the autouse
fixture in ``conftest.py`` records where it stood when each test started.
"""

from __future__ import annotations

import tidescope

at_start = [0]


def internal_errors() -> int:
    return int(tidescope.stats()["internal_errors"]) - at_start[0]
