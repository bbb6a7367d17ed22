"""Call tokens: what ``report_site_entry`` returns, and the call id each stands for.

The rewritten code keeps the token of a site call in a local and hands it back to the
exit, the failure exit and the value reporters. On the pure core a token is the call id
itself. On the C core a call entered through a site is a frame in C memory, and its token
is a cached object that names the frame's depth on the context's stack (no int made per
call); ``call_of`` turns it into the call id when Python code needs one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["call_of"]


def call_of(token: Any) -> Any:
    """The call id ``token`` stands for in this context (None if its call has left the
    stack); anything that is no token (a call id) is returned as it is."""
    return token
