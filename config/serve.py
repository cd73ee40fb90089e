"""The production web processes, with their bounds: `python -m config.serve public|internal`.

Two listeners, each its own granian process with its own workers and threads (README,
"Production"):

- `public` (`PORT`, default 8000): everything the load balancer forwards from the Internet;
- `internal` (`INTERNAL_PORT`, default 8001): the gateway's `/internal/v1/*`, reachable only on
  the private network. granian reads a request's body in the Python thread that runs it, so
  600 clients sending bodies slowly pinned every thread of a shared listener and stopped
  authorize; on its own listener the gateway's calls never wait behind the public's.

Each listener bounds what it takes on (issue 15, items 3 and 4):

- `--blocking-threads` (`WEB_THREADS` / `INTERNAL_THREADS`, default 6): granian's default was
  128 threads per worker, each keeping its own database connection for CONN_MAX_AGE: a burst of
  300 clients opened more connections than PostgreSQL allows, and the service stayed degraded
  for ten minutes. A thread holds at most one connection, so this bounds them;
- `--backpressure` equal to the threads: requests beyond them wait in granian's queue, not in
  threads that would each want a connection;
- `--backlog` (`BACKLOG`, default 128, granian's least; its default is 1024): connections
  waiting to be accepted. A gateway gives up on a call after 250 ms and sends the next one;
  every call it gave up on still sits in the queue and is served, in turn, by a thread that
  cannot answer anyone. A queue of 1,024 took the service more than 10 s to drain after a burst;
  a short one refuses the excess at once (the gateway denies, as it would on a timeout) and
  leaves nothing stale to serve once the burst is over;
- `--http1-header-read-timeout` (`HEADER_READ_TIMEOUT_MS`, default 5000): a client that opens a
  socket and sends its headers slowly or never is dropped after 5 s (granian's default: 30 s).
  granian has no bound on the time to read a body: the buffering reverse proxy in front of the
  public listener provides it (README, "Production").
"""

import os
import sys

APP = "credits.gateway.wsgi:application"

LISTENERS = {
    # name: (port variable, default port, workers variable, threads variable)
    "public": ("PORT", 8000, "WEB_WORKERS", "WEB_THREADS"),
    "internal": ("INTERNAL_PORT", 8001, "INTERNAL_WORKERS", "INTERNAL_THREADS"),
}


def command(
    listener: str, environ: dict[str, str] | None = None, granian: str = "granian"
) -> list[str]:
    """The granian command line of `listener`, its bounds read from `environ`."""
    env = os.environ if environ is None else environ
    port_var, default_port, workers_var, threads_var = LISTENERS[listener]
    threads = env.get(threads_var) or "6"
    return [
        granian,
        "--interface",
        "wsgi",
        "--host",
        env.get("HOST") or "0.0.0.0",  # noqa: S104 (behind the load balancer / private network)
        "--port",
        env.get(port_var) or str(default_port),
        "--workers",
        env.get(workers_var) or "2",
        "--blocking-threads",
        threads,
        "--backpressure",
        threads,
        "--backlog",
        env.get("BACKLOG") or "128",
        "--http1-header-read-timeout",
        env.get("HEADER_READ_TIMEOUT_MS") or "5000",
        "--no-ws",
        APP,
    ]


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in LISTENERS:
        sys.exit(f"usage: python -m config.serve {'|'.join(LISTENERS)}")
    argv = command(sys.argv[1], granian=os.path.join(os.path.dirname(sys.executable), "granian"))
    os.execv(argv[0], argv)  # noqa: S606 (our own fixed command line)


if __name__ == "__main__":
    main()
