"""``rsbook`` command line: run one chapter, or build the whole book."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .profiles import PROFILES


def _run(args: argparse.Namespace) -> int:
    from .book import notebook_source, run_notebook

    src = notebook_source(args.notebook)
    params = dict(args.param or [])
    out = Path(args.output) if args.output else Path("runs") / f"{src.stem}.ipynb"
    result = run_notebook(src, out, params, log_output=args.log_output)
    print(f"{result.chapter}: {result.status} in {result.seconds:.0f} s on {result.device}; executed notebook: {result.output}")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0 if result.status == "ok" else 1


def _book(args: argparse.Namespace) -> int:
    from .book import build_book

    return build_book(args.profile, only=args.only, build_html=not args.no_html, strict=not args.no_strict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rsbook", description="The randomized-smoothing book: run chapters, build the book.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute one chapter with papermill")
    p.add_argument("notebook", help="chapter name (e.g. 00_randomized_smoothing) or path")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set a parameter (repeatable); unknown names are an error")
    p.add_argument("-o", "--output", help="executed notebook path (default: runs/<chapter>.ipynb)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    p.set_defaults(func=_run)

    b = sub.add_parser("book", help="execute every chapter and build the HTML book")
    b.add_argument("--profile", default="cpu", choices=PROFILES)
    b.add_argument("--only", nargs="+", metavar="CHAPTER", help="run only these chapters")
    b.add_argument("--no-html", action="store_true", help="execute the chapters but do not build the HTML")
    b.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    b.set_defaults(func=_book)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rsbook: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
