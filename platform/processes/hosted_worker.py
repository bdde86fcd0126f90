"""The process a platform-hosted worker runs: the namespace's app (``PERDURE_APP``), connected with the
one credential it is given (``PERDURE_CONNECTION``, a broker user of the namespace's vhost and nothing
else), until SIGTERM. Started by the cell's worker supervisor, in a sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from perdure.infra.bounded_stop import end_process, stop_on_signals
from perdure.infra.logs import configure_logging
from perdure.platform.control.canary import WithCanary
from perdure.tenants.app_loader import load_app
from perdure.tenants.worker import Worker


async def serve(connection: str, app_path: str, environment: dict[str, str]) -> None:
    app = WithCanary(load_app(app_path))
    stop = asyncio.Event()
    # The supervisor SIGKILLs the worker at the end of its stop's grace: the activities still running
    # are handed back well before that.
    grace = float(environment.get("PERDURE_WORKER_STOP_GRACE_SECONDS", "5"))
    stop_on_signals(stop, grace * 2, "worker")
    rate = environment.get("PERDURE_ACTIVITIES_PER_SECOND")
    worker = Worker(
        connection,
        app,
        max_concurrent_activities=int(environment.get("PERDURE_MAX_CONCURRENT_ACTIVITIES", "100")),
        activities_per_second=float(rate) if rate else None,
        activity_burst=int(environment.get("PERDURE_ACTIVITY_BURST", "1")),
        max_cached_workflows=int(environment.get("PERDURE_MAX_CACHED_WORKFLOWS", "1000")),
    )
    idle_limit = float(environment.get("PERDURE_WORKER_IDLE_SECONDS", "0"))
    await worker.start()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if idle_limit and worker.idle_for() >= idle_limit:
                # Scale to zero: the supervisor starts a worker again when tasks wait.
                logging.getLogger("perdure.worker").info("worker idle: scaling to zero")
                break
    finally:
        await worker.shutdown(grace)
        if worker.handed_back:
            # Their threads cannot be stopped and would keep the interpreter alive: end here.
            end_process(0)


def main() -> None:
    # One JSON line per record (a traceback inside it): the supervisor adds each line to the cell's log.
    # The broker clients' lines of an outage are told once, as the platform's own processes tell them.
    configure_logging("WARNING", "json")
    logging.getLogger("perdure").setLevel(os.environ.get("PERDURE_LOG_LEVEL", "INFO"))
    connection = os.environ.pop("PERDURE_CONNECTION")
    asyncio.run(serve(connection, os.environ["PERDURE_APP"], dict(os.environ)))


if __name__ == "__main__":
    main()
