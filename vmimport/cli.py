"""The vmimport command: the server's commands (serve, worker, migrate, gc) and the client's
(import, export, tasks, images, snapshots; see ``vmimport.client``)."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from .config import Settings, load_settings
from .logs import configure
from .db.session import Database


DESCRIPTION = """\
vmimport: a self-hosted, EC2-compatible VM Import/Export service.

server commands:  serve (API and workers), worker (workers only), migrate, gc
client commands:  import, export, tasks, images, snapshots (they talk to any endpoint,
                  this server's or AWS's, through the public API)

Run 'vmimport COMMAND --help' for a command's options."""


def _common(parser: argparse.ArgumentParser, workers: bool = True) -> list[argparse.Action]:
    """The options the server commands take; returns them (serve hands them on to its worker).
    ``workers``: whether the command runs workers (migrate and gc do not)."""
    options = [
        parser.add_argument("--config", help="TOML configuration file (also VMIMPORT_CONFIG)"),
        parser.add_argument("--data-dir", help="database, block store and local buckets "
                            "(default ./data; VMIMPORT_DATA_DIR)"),
        parser.add_argument("--database-url", help="SQLAlchemy URL, e.g. "
                            "postgresql+psycopg://user@host/db (default: SQLite in the data "
                            "dir)"),
        parser.add_argument("--log-level", help="debug, info, warning (default info)"),
    ]
    if workers:
        options.append(parser.add_argument("--workers", type=int, help="worker threads "
                                           "(default 2; serve runs them in a child process, "
                                           "0: none)"))
    return options


def _settings(args) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir, database_url=args.database_url,
                         workers=getattr(args, "workers", None), log_level=args.log_level,
                         host=getattr(args, "host", None), port=getattr(args, "port", None))


def _prepare(settings: Settings, migrate: bool = True, verbose: bool = False) -> Database:
    from .blockstore.backends import BlockStoreUnavailable, open_block_store

    configure(settings.log_level, settings.log_format, verbose)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.buckets_dir.mkdir(parents=True, exist_ok=True)
    try:
        open_block_store(settings, check=True)  # a store this server cannot open stops it here
    except BlockStoreUnavailable as exc:
        raise SystemExit(f"vmimport: {exc}") from None
    db = Database(settings.sqlalchemy_url)
    if migrate:  # serve's worker process skips it: serve has just done it
        db.migrate_in_child(settings.log_level, settings.log_format, verbose)
    return db


def _worker_pool(settings: Settings, db: Database, threads: int):
    from .jobs.worker import WorkerPool
    from .pipeline.run_copy import run_copy_job
    from .pipeline.run_export import run_export_job
    from .pipeline.run_import import run_import_job

    handlers = {"import-image": run_import_job, "import-snapshot": run_import_job,
                "export-image": run_export_job, "copy-image": run_copy_job}
    return WorkerPool(db, settings, handlers, threads)


def _freeze_heap() -> None:
    """Move everything loaded so far (botocore's service models are hundreds of thousands of
    objects) out of the cyclic garbage collector's reach: otherwise every full collection during
    an import walks them all, which made conversions inside the server ~1.7x slower. What
    start-up freed (the models' documentation, say) goes back to the system."""
    gc.collect()
    gc.freeze()
    _glibc("malloc_trim", 0)


def _glibc(function: str, *args) -> None:
    """Call one of glibc's malloc tunables; nothing off glibc."""
    try:
        import ctypes

        getattr(ctypes.CDLL("libc.so.6"), function)(*args)
    except (OSError, AttributeError):
        pass


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
    what is freed in it; the threads of one import after another (readers, inflaters,
    writers) then left the server's RSS 20-50 MiB higher over a benchmark run (260 MiB at the
    end, 190 in a fresh server). Two arenas keep it flat. Does nothing off glibc."""
    _glibc("mallopt", -8, 2)  # M_ARENA_MAX


class WorkerProcess:
    """``serve``'s conversions run in a child ``vmimport worker``, not in threads of the API
    process: an import keeps both cores busy with hashing, copying and Python, and sharing one
    interpreter lock with it made API calls wait behind it (ImportImage's p99 under four
    imports 125-150 ms) and API calls slow the import. The child shares the configuration,
    the database and the block store; a pipe wakes it the moment a job is enqueued (see
    ``jobs.queue``), and it dies with this process. If it exits by itself, it is started again."""

    def __init__(self, args):
        self._argv = [sys.executable, "-m", "vmimport.cli", "worker"]
        for option in _common(argparse.ArgumentParser(add_help=False)):  # as serve got them
            value = getattr(args, option.dest, None)
            if value is not None:
                self._argv += [option.option_strings[0], str(value)]
        self._wake_read, wake_write = os.pipe()
        from .jobs import queue

        queue.add_wake_pipe(wake_write)
        self._argv += ["--wake-fd", str(self._wake_read)]
        self._stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self._watch = threading.Thread(target=self._supervise, daemon=True,
                                       name="worker-process")

    def start(self) -> "WorkerProcess":
        self._spawn()
        self._watch.start()
        return self

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self._argv, pass_fds=(self._wake_read,))
        logging.getLogger("vmimport").info("worker process %d started", self.proc.pid)

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            code = self.proc.wait()
            # A signal to the whole process group (Ctrl-C, ``kill -- -PGID``) reaches the
            # worker first; the server is stopping then, and says so within the second.
            if self._stopping.wait(1.0):
                return
            logging.getLogger("vmimport").error(
                "worker process %d exited with %s; started another", self.proc.pid, code)
            self._spawn()

    def stop(self, timeout: float = 20.0) -> None:
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logging.getLogger("vmimport").warning(
                    "worker process %d did not stop within %g s; killed", self.proc.pid, timeout)
                self.proc.kill()
                self.proc.wait()


def serve(args) -> None:
    settings = _settings(args)
    settings.check_listen_address()
    processes = settings.api_process_count()
    metrics_dir = None
    if processes > 1:
        # before prometheus_client is imported: it picks where counts live then (metrics.py)
        (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        metrics_dir = tempfile.mkdtemp(prefix="metrics-", dir=settings.data_dir / "tmp")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        db = _prepare(settings)
        if processes > 1:
            db.dispose()  # each API process opens its own
            received = _serve_forked(args, settings, processes)
        else:
            received = _serve_here(args, settings, db)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if received:  # end as the signal would have ended us (exit status "killed by SIGTERM")
        signal.signal(received, signal.SIG_DFL)
        signal.raise_signal(received)


def _uvicorn_config(app, settings: Settings):
    import uvicorn

    return uvicorn.Config(app, host=settings.host, port=settings.port,
                          timeout_keep_alive=settings.keep_alive_seconds,
                          # the app names itself (Server: vmimport); uvicorn's would be a second
                          server_header=False, log_level="warning", access_log=False,
                          log_config=None)  # uvicorn's records go through our handler and format


def _serving(settings: Settings, workers: "WorkerProcess | None", processes: int) -> None:
    from sqlalchemy.engine import make_url

    logging.getLogger("vmimport").info(
        "serving on http://%s:%d (data dir %s, database %s, %d API process%s, %d worker threads "
        "in process %s)", settings.host, settings.port, settings.data_dir,
        make_url(settings.sqlalchemy_url).render_as_string(hide_password=True), processes,
        "" if processes == 1 else "es", settings.workers, workers.proc.pid if workers else "-")


def _serve_here(args, settings: Settings, db: Database) -> int | None:
    """One API process: this one."""
    import uvicorn

    from .api.app import create_app

    app = create_app(settings, db)
    _freeze_heap()
    _few_malloc_arenas()
    workers = WorkerProcess(args).start() if settings.workers > 0 else None
    _serving(settings, workers, 1)
    # uvicorn catches SIGTERM/SIGINT while it serves, shuts down, then hands the signal to the
    # handler that was there before it; with the default one the process would die on the
    # spot, before the cleanup below (stopping the worker process first).
    received: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda caught, _frame: received.append(caught))
    try:
        uvicorn.Server(_uvicorn_config(app, settings)).run()
    finally:
        if workers is not None:
            workers.stop()
        db.dispose()
    return received[0] if received else None


def _serve_forked(args, settings: Settings, processes: int) -> int | None:
    """``processes`` API processes forked from this one (``api.processes``)."""
    import uvicorn

    from .api.app import create_app
    from .api.key_limits import SharedRateLimiter
    from .api.models import load_models
    from .api.processes import serve_forked

    load_models()  # loaded once, shared by the children's pages
    config = _uvicorn_config(None, settings)
    sock = config.bind_socket()  # here: a port in use stops the server before any fork
    limiter = SharedRateLimiter(settings.rate_limit_per_second)
    # The wake pipe is made now so the children inherit it; the worker process starts after
    # the forks, so no child inherits its supervising thread.
    workers = WorkerProcess(args) if settings.workers > 0 else None
    _freeze_heap()
    _few_malloc_arenas()

    def run_child(listening) -> None:
        db = Database(settings.sqlalchemy_url)
        try:
            app = create_app(settings, db, rate_limiter=limiter)
            uvicorn.Server(_uvicorn_config(app, settings)).run(sockets=[listening])
        finally:
            db.dispose()

    def started() -> None:
        if workers is not None:
            workers.start()
        _serving(settings, workers, processes)

    try:
        received = serve_forked(processes, sock, run_child, on_started=started)
    finally:
        if workers is not None:
            workers.stop()
        sock.close()
    if received is None:
        raise SystemExit("vmimport serve: an API process could not start (see the log above)")
    return received


def _die_with_parent(wake_fd: int) -> None:
    """``serve``'s worker process: get SIGTERM when serve dies (Linux), and leave at once if
    it is gone already (its end of the wake pipe is closed)."""
    from .api.processes import term_when_parent_dies

    term_when_parent_dies()
    if select.select([wake_fd], [], [], 0)[0] and os.read(wake_fd, 4096) == b"":
        raise SystemExit("vmimport worker: the serve process that started it is gone")


def worker(args) -> None:
    from .jobs import queue

    stop = threading.Event()  # a signal, or serve gone
    if args.wake_fd is not None:
        _die_with_parent(args.wake_fd)

        def serve_gone() -> None:
            logging.getLogger("vmimport").warning("the serve process is gone; stopping")
            stop.set()

        queue.listen_for_wakes(args.wake_fd, on_parent_gone=serve_gone)
    settings = _settings(args)
    if args.wake_fd is not None and settings.worker_niceness:
        os.nice(settings.worker_niceness)  # below the serve process that started us
    db = _prepare(settings, migrate=args.wake_fd is None)
    _few_malloc_arenas()
    pool = _worker_pool(settings, db, settings.workers)
    from .pipeline.sinks import reclaim_partial_exports

    # Leftovers of this host's killed workers: partial packs, half-written exports.
    for reclaimed, where in ((pool.blocks.reclaim_own_leftovers(), pool.blocks.location),
                             (reclaim_partial_exports(settings, None), settings.buckets_dir)):
        if reclaimed.removed:
            logging.getLogger("vmimport").info(
                "reclaimed %d leftover file(s) of killed imports or exports (%.1f MiB) in %s",
                reclaimed.removed, reclaimed.bytes_removed / 2**20, where)
    _freeze_heap()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pool.start()
    logging.getLogger("vmimport").info("worker %s running %d threads", pool.identity,
                                       settings.workers)
    schedule = None
    if settings.gc_every_hours > 0:
        from .jobs.gc import GcSchedule

        schedule = GcSchedule(settings, db, pool.blocks, pool.identity).start()
    stop.wait()
    if schedule is not None:
        schedule.stop()
    pool.stop()
    db.dispose()


def migrate(args) -> None:
    _prepare(_settings(args), verbose=args.verbose).dispose()


def gc_command(args) -> None:
    """Delete packs no snapshot refers to any more (DeleteSnapshot and DeregisterImage only
    drop manifests, since blocks are shared), crash leftovers and abandoned uploads. On the
    file store it refuses while imports are queued or running: their blocks are not in a
    manifest yet."""
    from .blockstore.backends import open_block_store
    from .jobs.gc import GcRefused, collect

    settings = _settings(args)
    db = _prepare(settings)
    try:
        outcome = collect(settings, db, open_block_store(settings))
    except GcRefused as refused:
        raise SystemExit(f"vmimport gc: {refused}") from None
    finally:
        db.dispose()
    for line in outcome.lines():
        print(line)


def main(argv: list[str] | None = None) -> None:
    from . import __version__
    from .client.commands import add_client_commands

    parser = argparse.ArgumentParser(prog="vmimport", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vmimport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="run the API and a worker process")
    _common(p)
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8787)")
    p.set_defaults(func=serve)
    p = sub.add_parser("worker", help="run workers only (same configuration as serve)")
    _common(p)
    p.add_argument("--wake-fd", type=int, help=argparse.SUPPRESS)  # serve's child: see WorkerProcess
    p.set_defaults(func=worker)
    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(p, workers=False)
    p.add_argument("--verbose", action="store_true", help="show every step of the migration")
    p.set_defaults(func=migrate)
    p = sub.add_parser("gc", help="delete blocks that no snapshot uses any more")
    _common(p, workers=False)
    p.add_argument("--verbose", action="store_true", help="show the migration's every step")
    p.set_defaults(func=gc_command)
    add_client_commands(sub)
    args = parser.parse_args(argv)
    status = args.func(args)
    if isinstance(status, int):
        raise SystemExit(status)


if __name__ == "__main__":
    main()
