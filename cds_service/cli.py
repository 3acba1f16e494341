"""The `va-cds` command: serve, evaluate, db upgrade, report overrides."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cds_service.settings import Settings

USAGE = """usage: va-cds <command> [options]

commands:
  serve [--workers N]        start the service with uvicorn (settings from VA_CDS_* variables)
  evaluate FILE [options]    run a hook offline on a request or patient Bundle and print the cards
  db upgrade                 apply database migrations
  report overrides [--since DATE] [--csv PATH|-]   override rates per rule
"""


def serve(argv: list[str]) -> int:
    import argparse
    import os

    import uvicorn

    from cds_service.scale import MissingSharedKeys, check_shared_keys

    settings = _read_settings()
    if settings is None:
        return 2
    parser = argparse.ArgumentParser(prog="va-cds serve")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.workers,
        help="worker processes (about one per core; see the README's 'Running at scale')",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 64:  # the range VA_CDS_WORKERS accepts (settings.py)
        parser.error("--workers must be between 1 and 64")
    try:
        # Before any worker starts: N processes with per-process random keys would break checklist links
        # and patient hashes between them without an error anywhere (issue 17).
        check_shared_keys(settings, args.workers)
    except MissingSharedKeys as exc:
        print(f"va-cds serve: {exc}", file=sys.stderr)
        return 2
    if not _preflight(settings):
        return 2
    # Each worker builds its own app from the environment: tell it how many there are, so its own start-up
    # check (create_app) sees the same thing.
    os.environ["VA_CDS_WORKERS"] = str(args.workers)
    _stop_quietly()
    # Graceful shutdown: uvicorn stops accepting on SIGTERM and lets in-flight requests finish.
    uvicorn.run(
        "cds_service.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,  # our JSON logging, configured by create_app
        # uvicorn's access log would record checklist URLs, whose token is a capability: our own
        # per-request JSON line (no tokens, no patient ids) replaces it.
        access_log=False,
        timeout_graceful_shutdown=20,
        # EHRs keep connections open between hook calls; closing idle ones after uvicorn's default 5 s races
        # with a request arriving on them. 75 s is the common reverse-proxy default.
        timeout_keep_alive=75,
        proxy_headers=True,
    )
    return 0


def _read_settings() -> Settings | None:
    """The `VA_CDS_*` settings, or None after one line naming the first invalid one."""
    from pydantic import ValidationError

    from cds_service.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        print(f"va-cds serve: invalid setting {where}: {first.get('msg')}", file=sys.stderr)
        return None


def _preflight(settings: Settings) -> bool:
    """Check the configuration once before uvicorn starts, so a bad setting is one line and exit 2.

    Each worker's `create_app` runs the same checks again; without this, uvicorn would print the error as a
    traceback from inside its import of the app and still exit 0. The checks' start-up warnings are muted
    here so that they are logged once, by the app.
    """
    import logging

    from cds_service.auth import load_trust
    from cds_service.memory.policy import load_memory_policy
    from cds_service.startup import check_settings
    from hooks.policy import load_policy

    logging.disable(logging.WARNING)
    try:
        check_settings(settings)
        policy = load_policy(settings.policy_file)
        load_memory_policy(policy.path)
        if settings.auth_mode != "off":
            load_trust(settings)
    except (ValueError, OSError) as exc:  # PolicyError and the trust/start-up checks are ValueErrors
        print(f"va-cds serve: {exc}", file=sys.stderr)
        return False
    finally:
        logging.disable(logging.NOTSET)
    return True


def _stop_quietly() -> None:
    """Exit 0 after a graceful shutdown on Ctrl-C or SIGTERM, instead of dying by the signal.

    uvicorn handles SIGINT/SIGTERM itself and, once shut down, re-raises the signal to the handler that was in
    place before it started. With Python's defaults that ends the process by the signal (a traceback for
    SIGINT), and `make serve` then reports `Error 130`/`Error 143` for what was an orderly stop. This handler
    receives that re-raised signal and does nothing, so `serve` returns 0.
    """
    import signal

    def _stopped(_signum: int, _frame: object) -> None:
        return None

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "serve":
        return serve(rest)
    if command == "evaluate":
        from cds_service.evaluate import main as evaluate_main

        return evaluate_main(rest)
    if command == "db":
        from cds_service.report import db_main

        return db_main(rest)  # "upgrade [--database-url URL]"
    if command == "report":
        from cds_service.report import main as report_main

        return report_main(rest)  # "overrides [--since DATE] [--csv PATH|-]"
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
