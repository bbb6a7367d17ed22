"""``tidescope view``: a local web debugger over a trace, served on 127.0.0.1.

The page and its assets ship in this package (nothing is fetched from the network); every
answer it gets is a bounded query through ``tidescope.query``'s index (the ``view`` extra
brings DuckDB).
"""

from __future__ import annotations

import os
import sys
import threading
import webbrowser
from typing import TYPE_CHECKING

from tidescope.view._api import Api
from tidescope.view._server import ViewServer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MEMORY_LIMIT", "Api", "ViewServer", "serve"]

MEMORY_LIMIT = "256MB"
"""What the server's queries may hold in DuckDB, its cache of the index included."""


def serve(
    directory: str | os.PathLike[str],
    *,
    port: int = 0,
    open_browser: bool = False,
    ready: Callable[[ViewServer], None] | None = None,
) -> None:
    """Index ``directory`` if needed, then serve the viewer until interrupted.

    Args:
        port: the port on 127.0.0.1 (0: a free one).
        open_browser: open the page in the user's browser.
        ready: called with the server once it listens (tests use it to learn the URL).
    """
    from tidescope.query import open_index  # noqa: PLC0415

    # DuckDB would cache up to 80% of RAM of a big index: the server stays flat instead
    with open_index(directory, memory_limit=MEMORY_LIMIT) as index:
        api = Api(index, directory)
        server = ViewServer(api, port)
        # the summary every first view asks for is made while the browser starts
        threading.Thread(target=_warm, args=(api,), daemon=True).start()
        with server:
            print(f"tidescope view: {server.url}  (Ctrl-C stops)", flush=True)
            if ready is not None:
                ready(server)
            if open_browser:
                threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                print("", file=sys.stderr)


def _warm(api: Api) -> None:
    try:
        api.summary()
    except Exception:  # the page's own request will say what failed
        pass
