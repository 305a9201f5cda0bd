"""The command line: ``python -m sqsbeat_celery export-schedule MODULE:APP``."""

from __future__ import annotations

import argparse
import sys

from .export import export_schedule


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sqsbeat_celery",
        description="Celery side of sqsbeat.")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser(
        "export-schedule",
        help="print a Celery app's beat_schedule as a sqsbeat schedule file (TOML)",
        description="Print the app's beat_schedule as a sqsbeat schedule file on standard output. "
                    "Entries that have no sqsbeat equivalent are reported on standard error and "
                    "left out; the exit status is then 1 (the other entries are still printed).")
    exp.add_argument("app", metavar="MODULE:APP",
                     help="the Celery app, as for `celery -A` (e.g. proj.celery:app or proj)")
    exp.add_argument("-o", "--output", metavar="FILE",
                     help="write the schedule to FILE instead of standard output")
    args = parser.parse_args(argv)

    from celery.app.utils import find_app

    try:
        app = find_app(args.app)
    except Exception as e:  # whatever importing the user's module raises
        print(f"export-schedule: cannot load the Celery app {args.app!r}: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    result = export_schedule(app, source=args.app)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(result.toml)
    else:
        sys.stdout.write(result.toml)
    for name, reason in result.problems:
        where = f"entry {name!r}" if name is not None else "schedule"
        print(f"export-schedule: {where}: {reason}", file=sys.stderr)
    if result.problems:
        skipped = len({n for n, _ in result.problems if n is not None})
        print(f"export-schedule: exported {len(result.exported)} entr"
              f"{'y' if len(result.exported) == 1 else 'ies'}; {skipped} left out, "
              "see the reasons above", file=sys.stderr)
        return 1
    return 0
