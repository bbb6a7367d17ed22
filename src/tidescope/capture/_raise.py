"""Where an exception was raised: the innermost frame of its traceback, for exception exits."""

from __future__ import annotations

import types
from typing import Any, Final

_TRACEBACK: Final = BaseException.__dict__["__traceback__"]
_STEPS: Final = 64

# The last answer: (id of the exception, id of its traceback's head then, the place), by
# ids: holding the traceback would keep its frames' locals alive past their time. An
# exception leaves N recorded frames with N exits, its traceback one entry longer at each;
# the walk stops where the last one began (an old head is still in the chain), so a
# RecursionError through 1000 frames costs 1000 short walks, not a million steps.
_last: tuple[int, int, dict[str, Any] | None] = (0, 0, None)


def raised_at(exc: Any) -> dict[str, Any] | None:
    """``{"file", "line", "function"}`` of the frame that raised ``exc``, or None.

    Reads only the traceback's frames and code objects (no user code runs). Never raises.
    """
    global _last
    try:
        tb = _TRACEBACK.__get__(exc)
        if type(tb) is not types.TracebackType:
            return None
        head = id(tb)
        last_id, last_head, last_place = _last
        if last_id == id(exc) and last_head:
            step: Any = tb
            for _ in range(_STEPS):
                if id(step) == last_head:  # alive in this chain: the same traceback entry
                    _last = (last_id, head, last_place)
                    return last_place
                step = step.tb_next
                if step is None:
                    break
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        place = {"file": code.co_filename, "line": tb.tb_lineno, "function": code.co_qualname}
        _last = (id(exc), head, place)
        return place
    except Exception:
        return None
