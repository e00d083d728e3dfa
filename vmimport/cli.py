"""``vmimport serve`` (API + workers), ``vmimport worker`` (workers only), ``vmimport migrate``,
``vmimport gc`` (delete unreferenced packs)."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading

from .config import Settings, load_settings
from .db.session import Database


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML configuration file (also VMIMPORT_CONFIG)")
    parser.add_argument("--data-dir", help="database, block store and local buckets "
                        "(default ./data; VMIMPORT_DATA_DIR)")
    parser.add_argument("--database-url", help="SQLAlchemy URL, e.g. "
                        "postgresql+psycopg://user@host/db (default: SQLite in the data dir)")
    parser.add_argument("--workers", type=int, help="worker threads (serve default 2)")
    parser.add_argument("--log-level", help="debug, info, warning (default info)")


def _settings(args) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir, database_url=args.database_url,
                         workers=args.workers, log_level=args.log_level,
                         host=getattr(args, "host", None), port=getattr(args, "port", None))


def _prepare(settings: Settings) -> Database:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.buckets_dir.mkdir(parents=True, exist_ok=True)
    settings.blocks_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    db.migrate()
    return db


def _worker_pool(settings: Settings, db: Database, threads: int):
    from .jobs.worker import WorkerPool
    from .pipeline.run_import import run_import_job

    handlers = {"import-image": run_import_job, "import-snapshot": run_import_job}
    return WorkerPool(db, settings, handlers, threads)


def _freeze_heap() -> None:
    """Move everything loaded so far (botocore's service models are hundreds of thousands of
    objects) out of the cyclic garbage collector's reach: otherwise every full collection during
    an import walks them all, which made conversions inside the server ~1.7x slower."""
    gc.collect()
    gc.freeze()


def _few_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
    what is freed in it; the threads of one import after another (readers, inflaters,
    writers) then left the server's RSS 20-50 MiB higher over a benchmark run (260 MiB at the
    end, 190 in a fresh server). Two arenas keep it flat. Does nothing off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def serve(args) -> None:
    import uvicorn

    from .api.app import create_app

    settings = _settings(args)
    settings.check_listen_address()
    db = _prepare(settings)
    app = create_app(settings, db)
    _freeze_heap()
    _few_malloc_arenas()
    pool = _worker_pool(settings, db, settings.workers)
    pool.start()
    logging.getLogger("vmimport").info(
        "serving on http://%s:%d (data dir %s, database %s, %d worker threads)",
        settings.host, settings.port, settings.data_dir, db.write_engine.url.render_as_string(
            hide_password=True), settings.workers)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port,
                    log_level="warning", access_log=False)
    finally:
        pool.stop()
        db.dispose()


def worker(args) -> None:
    settings = _settings(args)
    db = _prepare(settings)
    _few_malloc_arenas()
    pool = _worker_pool(settings, db, settings.workers)
    _freeze_heap()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    pool.start()
    logging.getLogger("vmimport").info("worker %s running %d threads", pool.identity,
                                       settings.workers)
    stop.wait()
    pool.stop()
    db.dispose()


def migrate(args) -> None:
    _prepare(_settings(args)).dispose()


def gc_command(args) -> None:
    """Delete packs no snapshot refers to any more (DeleteSnapshot and DeregisterImage only
    drop manifests, since blocks are shared). Refuses while imports are queued or running:
    their blocks are not in a manifest yet."""
    from sqlalchemy import func, select

    from .blockstore.store import BlockStore
    from .db.models import Job

    settings = _settings(args)
    db = _prepare(settings)
    with db.read() as session:
        busy = session.scalar(select(func.count()).select_from(Job)
                              .where(Job.state.in_(["queued", "running"])))
    if busy:
        raise SystemExit(f"vmimport gc: {busy} import job(s) are queued or running; run it "
                         "when none are (their blocks are not in a manifest yet)")
    report = BlockStore(settings.blocks_dir).collect_garbage()
    print(f"removed {report.packs_removed} unreferenced pack(s), "
          f"{report.bytes_removed / 2**20:.1f} MiB")
    if report.unreferenced_bytes_kept:
        print(f"{report.unreferenced_bytes_kept / 2**20:.1f} MiB of unreferenced blocks remain "
              "inside packs that other snapshots still use (packs are reclaimed whole)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="vmimport", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the API and a worker pool")
    _common(p)
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8787)")
    p.set_defaults(func=serve)
    p = sub.add_parser("worker", help="run workers only (same configuration as serve)")
    _common(p)
    p.set_defaults(func=worker)
    p = sub.add_parser("migrate", help="create or upgrade the database schema")
    _common(p)
    p.set_defaults(func=migrate)
    p = sub.add_parser("gc", help="delete blocks that no snapshot uses any more")
    _common(p)
    p.set_defaults(func=gc_command)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
