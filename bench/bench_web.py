"""Per-request cost of the web middleware under real servers, against OpenTelemetry's.

    python bench/bench_web.py [--rounds 5] [--duration 3] [--connections 8]

Needs ``wrk`` (Debian: ``apt-get install -y wrk``); without it the script says so and exits
with status 2. Two servers, each a separate process on a free 127.0.0.1 port, in four
configurations each:

* ``asgi``: a trivial Starlette endpoint (``GET /`` -> ``"ok"``) under uvicorn (one
  process, the asyncio loop, h11 or httptools as uvicorn picks);
* ``wsgi``: a trivial WSGI application (``"ok"`` with its Content-Length) under gunicorn
  (one sync worker: one request at a time, a new connection each, and no other thread
  contending for the GIL, so that the figure is the CPU a request costs), or waitress (one
  process, 4 threads) when gunicorn is not installed or ``BENCH_WSGI_SERVER=waitress``
  (there the threads' contention for the GIL makes the figures far noisier);

and the configurations: ``plain`` (no middleware), ``off`` (tidescope's middleware, capture
not started), ``tidescope`` (the middleware, capture started, and the drain writing the
trace to a temporary directory, as ``tidescope run`` does: 4 events per ASGI request, the
request's start and end and the endpoint's entry and exit, and 2 per WSGI request), and
``otel`` (OpenTelemetry's ``opentelemetry-instrumentation-asgi`` / ``-wsgi`` middleware
with the SDK's TracerProvider and a BatchSpanProcessor feeding an exporter that drops the
spans: the spans are made, never serialised).

First, in process: each configuration's application called directly in a loop (no server,
no network; capture into the ring only), which isolates the middleware's cost, plus
``tidescope, reporters stubbed`` (capture on, every ``report_*`` the integration calls
replaced by a no-op: the integration's own work, without the core's events) and
``tidescope, drain writing`` (the drain thread writing the trace file meanwhile, its CPU
time counted, the events left at the end written inside the timing). Then
the servers, all eight at once; each round runs wrk against every one of them in a
shuffled order, so that drift of this shared machine spreads over all configurations. The
tables give the median requests per second over rounds and the added time per request,
``1e6 / rps - 1e6 / rps(plain)`` in µs: with the server saturated, the extra time each
request costs the server; and, less exposed to the machine's drift, the CPU time the
server's processes spent during each wrk run (user + system, from /proc, in 10 ms ticks)
over the requests wrk completed. The in-process figures are CPU time too. The target
(issue 5, issue 10) is tidescope's added cost at most one tenth of OpenTelemetry's.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SERVERS = ("asgi", "wsgi")
MODES = ("plain", "off", "tidescope", "otel")
STUBBED = "tidescope, reporters stubbed"  # in process only
DRAINED = "tidescope, drain writing"  # in process only
try:
    import gunicorn  # noqa: F401
except ImportError:
    WSGI_SERVER = "waitress"
else:
    WSGI_SERVER = os.environ.get("BENCH_WSGI_SERVER", "gunicorn")


# ---------------------------------------------------------------------------------------
# the servers (each run as ``bench_web.py --serve KIND --mode MODE --port N``)


def asgi_app(mode: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request: Any) -> Any:
        return PlainTextResponse("ok")

    app: Any = Starlette(routes=[Route("/", index)])
    if mode in ("off", "tidescope"):
        from tidescope.integrations.asgi import TideScopeMiddleware

        app.add_middleware(TideScopeMiddleware)
    elif mode == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app, tracer_provider=otel_provider())
    return app


def wsgi_app(mode: str) -> Any:
    def app(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    if mode in ("off", "tidescope"):
        from tidescope.integrations.wsgi import TideScopeMiddleware

        return TideScopeMiddleware(app)
    if mode == "otel":
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(app, tracer_provider=otel_provider())
    return app


def otel_provider() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class DropExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    return provider


def serve(kind: str, mode: str, port: int) -> None:
    if mode == "tidescope" and not (kind == "wsgi" and WSGI_SERVER == "gunicorn"):
        start_capture()
    if kind == "asgi":
        import uvicorn

        uvicorn.run(
            asgi_app(mode), host="127.0.0.1", port=port, log_level="error", access_log=False,
            lifespan="off",
        )  # fmt: skip
    elif kind == "wsgi" and WSGI_SERVER == "gunicorn":
        serve_gunicorn(mode, port)
    else:
        import logging

        import waitress

        logging.getLogger("waitress").setLevel(logging.ERROR)  # "Task queue depth" under load
        waitress.serve(wsgi_app(mode), host="127.0.0.1", port=port, threads=4, _quiet=True)


def serve_gunicorn(mode: str, port: int) -> None:
    """One sync gunicorn worker: one request at a time, no thread competing for the GIL."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": f"127.0.0.1:{port}", "workers": 1, "worker_class": "sync",
                "loglevel": "error", "accesslog": None,
                "control_socket_disable": True,  # gunicorn >= 25: one control socket per user
            }  # fmt: skip
            for key, value in settings.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:  # in the worker, after the fork
            if mode == "tidescope":
                start_capture()
            return wsgi_app(mode)

    Server().run()


def start_capture() -> None:
    """Capture on, and the drain writing the trace to a temporary directory."""
    import tidescope
    from tidescope.export.drain import Drain

    tidescope.start()
    Drain(tempfile.mkdtemp(prefix="bench_web_")).start()


# ---------------------------------------------------------------------------------------
# in process: the middleware alone, no server, no network


def in_process(rounds: int, n: int) -> dict[tuple[str, str], list[float]]:
    """CPU µs per request of each configuration's app called directly (the process's CPU
    time, every thread: OpenTelemetry's span processor too), ``n`` requests a run,
    every configuration once per round in a shuffled order (capture switched on only for
    the ``tidescope`` runs; its ring is drained between runs, outside the timing)."""
    import asyncio

    import tidescope
    from tidescope.export.drain import Drain

    apps = {(k, m): (asgi_app if k == "asgi" else wsgi_app)(m) for k in SERVERS for m in MODES}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/", "raw_path": b"/", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http",
    }  # fmt: skip

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    async def asgi_run(app: Any) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    def wsgi_run(app: Any) -> None:
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

    from tidescope.integrations import _web

    reporters = [n for n in dir(_web) if n.startswith("report_")]
    real = {n: getattr(_web, n) for n in reporters}

    def stub(*args: Any) -> bool:
        return True

    for kind in SERVERS:  # the integration's own work: every reporter it calls a no-op
        apps[(kind, STUBBED)] = apps[(kind, "tidescope")]
        apps[(kind, DRAINED)] = apps[(kind, "tidescope")]
    out: dict[tuple[str, str], list[float]] = {c: [] for c in apps}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        order = list(apps)
        random.shuffle(order)
        for kind, mode in order:
            app = apps[(kind, mode)]
            capture = mode in ("tidescope", STUBBED, DRAINED)
            session = tidescope.start(buffer_size=1 << 16) if capture else None
            drain = (
                Drain(tempfile.mkdtemp(prefix="bench_web_")).start() if mode == DRAINED else None
            )
            for name in reporters:
                setattr(_web, name, stub if mode == STUBBED else real[name])
            try:
                t0 = _cpu_ns()
                if kind == "asgi":
                    asyncio.run(asgi_run(app))
                else:
                    wsgi_run(app)
                if drain is not None:  # what is left, encoded and written inside the timing
                    drain.stop()
                us = (_cpu_ns() - t0) / n / 1e3
            finally:
                if session is not None:
                    tidescope.stop()
            out[(kind, mode)].append(us)
    for name in reporters:
        setattr(_web, name, real[name])
    return {c: v[1:] for c, v in out.items()}


# ---------------------------------------------------------------------------------------
# the driver

_cpu_ns = time.process_time_ns  # every thread of the process: OpenTelemetry's span thread too
_TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def tree_cpu_ns(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and its live descendants (gunicorn's
    worker), from /proc: in clock ticks (10 ms), so read over runs of seconds."""
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) * _TICK_NS
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:  # gone meanwhile
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


def run_wrk(port: int, duration: float, connections: int) -> tuple[float, int]:
    """Requests per second and requests completed, from wrk's report."""
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    out = proc.stdout
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed on port {port}: {proc.stderr or out}")
    if re.search(r"Non-2xx or 3xx responses", out) or re.search(r"Socket errors", out):
        raise RuntimeError(f"wrk saw failed requests on port {port}:\n{out}")
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if m is None or n is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(m.group(1)), int(n.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of wrk per run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--in-process", type=int, default=5000, metavar="N",
        help="requests per in-process run (0: skip the in-process table)",
    )  # fmt: skip
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.mode, args.port)
        return 0
    if args.in_process:
        report_in_process(in_process(args.rounds, args.in_process), args)
    if shutil.which("wrk") is None:
        print(
            "bench_web.py needs the wrk load generator: `apt-get install -y wrk` (Debian) or "
            "your system's package; the servers were not measured.",
            file=sys.stderr,
        )
        return 2

    configs = [(kind, mode) for kind in SERVERS for mode in MODES]
    procs: dict[tuple[str, str], tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for config in configs:
            port = free_port()
            cmd = [sys.executable, __file__, "--serve", config[0], "--mode", config[1],
                   "--port", str(port)]  # fmt: skip
            procs[config] = (subprocess.Popen(cmd), port)
        for proc, port in procs.values():
            wait_listening(port, proc)
        for _, port in procs.values():  # warm-up: imports, caches, first connections
            run_wrk(port, 1, args.connections)
        rps: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
        cpu: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
        for r in range(args.rounds):
            order = configs[:]
            random.shuffle(order)
            for config in order:
                proc, port = procs[config]
                before = tree_cpu_ns(proc.pid)
                rate, requests = run_wrk(port, args.duration, args.connections)
                rps[config].append(rate)
                cpu[config].append((tree_cpu_ns(proc.pid) - before) / requests / 1e3)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            proc.wait(30)
    report(rps, cpu, args)
    return 0


def verdict(tidescope_us: float, otel_us: float) -> str:
    """The target line: tidescope's added cost over OpenTelemetry's."""
    if tidescope_us <= 0 or otel_us <= 0:
        return "tidescope / OpenTelemetry added cost: not resolved (within this run's noise)"
    ratio = tidescope_us / otel_us
    met = "meets" if ratio <= 0.1 else "misses"
    return f"tidescope / OpenTelemetry added cost: {ratio:.3f} ({met} the 0.1 target)"


def report_in_process(us: dict[tuple[str, str], list[float]], args: argparse.Namespace) -> None:
    import tidescope

    print(f"In process (the app called directly, {args.in_process} requests a run, "
          f"core {tidescope.core_info()['core']}, ring only but in the drain row): "
          f"median of {args.rounds} interleaved rounds\n")  # fmt: skip
    for kind in SERVERS:
        modes = (*MODES, STUBBED, DRAINED)
        med = {mode: statistics.median(us[(kind, mode)]) for mode in modes}
        print(f"{kind}: | configuration | CPU µs/request (min-max) | added CPU µs/request |")
        print("|---|---|---|")
        for mode in modes:
            lo, hi = min(us[(kind, mode)]), max(us[(kind, mode)])
            added = med[mode] - med["plain"]
            print(f"| {mode} | {med[mode]:.1f} ({lo:.1f}-{hi:.1f}) | {added:+.1f} |")
        print(verdict(med["tidescope"] - med["plain"], med["otel"] - med["plain"]))
        print("with the drain writing the trace, " +
              verdict(med[DRAINED] - med["plain"], med["otel"] - med["plain"]))  # fmt: skip
        print()
    sys.stdout.flush()


def report(
    rps: dict[tuple[str, str], list[float]],
    cpu: dict[tuple[str, str], list[float]],
    args: argparse.Namespace,
) -> None:
    import tidescope  # the servers inherit this interpreter and environment: the same core

    core = tidescope.core_info()
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.machine()}, {os.cpu_count()} CPUs; tidescope core {core['core']} "
          f"({core['reason']}); wrk -t1 -c{args.connections} -d{args.duration:g}s, "
          f"{args.rounds} interleaved rounds, medians\n")  # fmt: skip
    for kind in SERVERS:
        med = {mode: statistics.median(rps[(kind, mode)]) for mode in MODES}
        base = 1e6 / med["plain"]
        added = {mode: 1e6 / med[mode] - base for mode in MODES}
        server = "uvicorn" if kind == "asgi" else WSGI_SERVER
        print(f"{kind} ({server}): | configuration | requests/s (min-max) | added µs/request |")
        print("|---|---|---|")
        for mode in MODES:
            lo, hi = min(rps[(kind, mode)]), max(rps[(kind, mode)])
            print(f"| {mode} | {med[mode]:.0f} ({lo:.0f}-{hi:.0f}) | {added[mode]:+.1f} |")
        print(verdict(added["tidescope"], added["otel"]))
        print()
        cmed = {mode: statistics.median(cpu[(kind, mode)]) for mode in MODES}
        print(f"{kind} ({server}), the server's CPU time (its processes, from /proc): "
              f"| configuration | CPU µs/request (min-max) | added CPU µs/request |")  # fmt: skip
        print("|---|---|---|")
        for mode in MODES:
            lo, hi = min(cpu[(kind, mode)]), max(cpu[(kind, mode)])
            extra = cmed[mode] - cmed["plain"]
            print(f"| {mode} | {cmed[mode]:.1f} ({lo:.1f}-{hi:.1f}) | {extra:+.1f} |")
        print(verdict(cmed["tidescope"] - cmed["plain"], cmed["otel"] - cmed["plain"]))
        print()


if __name__ == "__main__":
    sys.exit(main())
