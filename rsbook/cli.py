"""``rsbook`` command line: run one chapter, or build the whole book."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .book.profiles import PROFILES

if TYPE_CHECKING:
    from .infra.distributed import World


class Terminated(SystemExit):
    """SIGTERM as an exception (exit status 143), so that a stopped ``rsbook run`` (or a one-chapter-at-a-time
    ``rsbook book``) unwinds as on Ctrl-C: its kernel is shut down and its temporary folders are removed.
    Stored artifacts are written atomically and kept; a rerun resumes from them. ``rsbook book --jobs N``
    keeps the default SIGTERM (an immediate stop): its chapters run in threads, which an exception in the
    main thread would wait for."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


@contextlib.contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (in the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from .book.pipeline import format_parameters, notebook_source, run_notebook

    src = notebook_source(args.notebook)
    if args.list_parameters:
        print(f"{src.stem}: parameters (set with -p NAME VALUE; defaults shown)\n{format_parameters(src)}")
        return 0
    params = dict(args.param or [])
    out = Path(args.output) if args.output else Path("runs") / f"{src.stem}.ipynb"
    from .infra.distributed import world

    w = world()
    if w.distributed and not w.main:  # under torchrun every rank runs the chapter; rank 0's notebook is the result
        out = out.with_name(f"{out.stem}.rank{w.rank}{out.suffix}")
    shared = _shared_tmp(out, src.stem) if w.distributed else None
    try:
        with _stopped_by_sigterm():
            result = run_notebook(src, out, params, log_output=args.log_output, tmp_dir=shared)
    except Terminated:
        shared = None  # stopped: no waiting for the other ranks' marks (they are being stopped too)
        raise
    finally:
        if shared is not None:
            _release_shared_tmp(shared, w)
    print(f"{result.chapter}: {result.status} in {result.seconds:.0f} s on {result.device}; executed notebook: {result.output}")
    if result.error:
        print(result.error, file=sys.stderr)
    return 0 if result.status == "ok" else 1


#: How long rank 0 waits, after its own run, for the other ranks to finish with its temporary stores.
SHARED_TMP_WAIT_S = 600.0


def _shared_tmp(out: Path, chapter: str) -> Path:
    """Under torchrun: the folder for this launch's temporary stores (``smoke``, ``dry_run``), the same
    on every rank without communication: ``<output folder>/.tmp/<chapter>-<launch>``. Rank 0's kernel
    creates it when it makes a store; every rank uses rank 0's stores (see :func:`_release_shared_tmp`)."""
    import os
    import re

    launch = "-".join(os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"))
    return (out.parent / ".tmp" / re.sub(r"[^A-Za-z0-9._-]", "_", f"{chapter}-{launch}")).resolve()


def _release_shared_tmp(shared: Path, w: World) -> None:
    """After this rank's run: every other rank leaves a ``done.rank<r>`` mark in ``shared``; rank 0 waits
    for every mark (at most :data:`SHARED_TMP_WAIT_S` seconds), then removes the folder.

    A rank whose kernel made no store and saw none (e.g. profile ``cpu``) finds no folder and marks
    nothing; rank 0 then has nothing to remove. A folder whose marks do not all come (a rank on a
    machine that cannot see it) is kept, and rank 0 says where.
    """
    import shutil
    import time

    if not w.main:
        try:
            if shared.is_dir():
                (shared / f"done.rank{w.rank}").write_text("done\n")
        except OSError:  # rank 0 removed it meanwhile: it needed no mark
            pass
        return
    if not shared.is_dir():
        return
    missing = list(range(1, w.size))
    deadline = time.monotonic() + SHARED_TMP_WAIT_S
    while True:
        missing = [r for r in missing if not (shared / f"done.rank{r}").exists()]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing:
        print(f"rsbook: kept the temporary stores in {shared}: rank(s) {missing} did not finish with them within "
              f"{SHARED_TMP_WAIT_S:.0f} s; delete the folder when no rank runs", file=sys.stderr)
        return
    shutil.rmtree(shared, ignore_errors=True)
    try:
        shared.parent.rmdir()  # runs/.tmp, once no other launch uses it
    except OSError:
        pass


def _run_epilog() -> str:
    """``rsbook run --help``'s closing text: the chapters of this checkout, and how to see a chapter's parameters."""
    from .book.pipeline import chapters
    from .infra.paths import repo_root

    try:
        names = [c.stem for c in chapters()]
        listed = ("chapters:\n" + "\n".join(f"  {n}" for n in names) if names else
                  f"chapters: none in {repo_root() / 'notebooks'}; set RSBOOK_ROOT=/path/to/checkout to list them")
    except FileNotFoundError:
        listed = ("chapters: the rsbook checkout was not found from here; run from inside it or set RSBOOK_ROOT=/path/to/checkout "
                  "to list them")
    return (f"{listed}\n\nA chapter's parameters, with their defaults and what they do: rsbook run CHAPTER --list-parameters\n"
            "e.g. rsbook run 00_randomized_smoothing -p profile smoke -p seed 1")


def _book(args: argparse.Namespace) -> int:
    from .book.pipeline import build_book
    from .infra.distributed import world

    if world().distributed:
        print("rsbook book: under torchrun, run each chapter with `torchrun --nproc-per-node=K -m rsbook run CHAPTER -p profile "
              f"{args.profile}`; then build the pages from the stored results with a plain `rsbook book --profile {args.profile}`",
              file=sys.stderr)
        return 2
    with _stopped_by_sigterm() if args.jobs == 1 else contextlib.nullcontext():
        return build_book(args.profile, only=args.only, build_html=not args.no_html, strict=not args.no_strict,
                          out_dir=args.out, jobs=args.jobs, api_reference=not args.no_api)


def _scorecard(args: argparse.Namespace) -> int:
    from .book.scorecard import counts, load_claims, scorecard_page

    folder = Path(args.folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {folder}: give a folder of <chapter>.claims.json files")
    df = load_claims(folder)
    if df.empty:
        raise FileNotFoundError(f"no claims in {folder}: it holds no <chapter>.claims.json file with a claim")
    if args.page:
        print(scorecard_page(folder, ", ".join(dict.fromkeys(df["profile"]))), end="")
    else:
        print(counts(df).to_string())
    return 0


def _claims_diff(args: argparse.Namespace) -> int:
    from .book.claims import diff_claim_files

    try:
        diffs = diff_claim_files(args.reference, args.built)
    except FileNotFoundError as exc:
        print(f"rsbook claims-diff: {exc}", file=sys.stderr)
        return 2
    if diffs:
        print(f"rsbook claims-diff: the built claims ({args.built}) differ from the reference ({args.reference}) in "
              f"{len(diffs)} field(s):\n  " + "\n  ".join(diffs) + "\nIf a result was recomputed on purpose, copy the built "
              f"*.claims.json files into {args.reference} in the same commit.", file=sys.stderr)
        return 1
    print(f"rsbook claims-diff: the claims in {args.built} equal the reference in {args.reference} (timed numbers by verdict only)")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .runs.runner import merge_certification
    from .runs.shards import ShardError

    try:
        log, artifact = merge_certification(args.path)
    except (ShardError, FileExistsError) as exc:
        print(f"rsbook merge: {exc}", file=sys.stderr)
        return 2
    print(f"merged log: {log}" + (f"; stored artifact: {artifact}" if artifact else ""))
    return 0


def _bench_certify(args: argparse.Namespace) -> int:
    from .bench.certify import BenchConfig, bench_certify, format_table, write_csv
    from .bench.common import write_json
    from .bench.load import is_contended

    cfg = _config_from(BenchConfig, args)
    result = bench_certify(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_table(result))
    refused = []
    for path, write in ((args.json, write_json), (args.csv, write_csv)):
        if not path:
            continue
        if is_contended(result) and Path(path).exists() and not args.force:
            refused.append(path)
            continue
        write(result, path)
    if refused:
        print(f"rsbook: not overwriting {', '.join(refused)} with a contended run (pass --force to do it anyway)", file=sys.stderr)
        return 3
    return 0


def _bench_sequential(args: argparse.Namespace) -> int:
    from .bench.certify import BenchConfig
    from .bench.common import write_json
    from .bench.sequential import bench_sequential, format_sequential

    cfg = _config_from(BenchConfig, args)
    result = bench_sequential(cfg, args.radii, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_sequential(result))
    if args.json:
        write_json(result, args.json)
    return 0


def _run_bench(args: argparse.Namespace, cfg: Any, bench: Any, fmt: Any) -> int:
    """Run ``bench(cfg)`` with progress on stderr, print ``fmt(result)``, and write ``--json`` if given."""
    from .bench.common import write_json

    result = bench(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(fmt(result))
    if args.json:
        write_json(result, args.json)
    return 0


def _bench_dual(args: argparse.Namespace) -> int:
    from .bench.dual import DualBenchConfig, bench_dual, format_dual

    return _run_bench(args, _config_from(DualBenchConfig, args), bench_dual, format_dual)


def _bench_denoised(args: argparse.Namespace) -> int:
    from .bench.denoised import DenoisedBenchConfig, bench_denoised, format_denoised

    return _run_bench(args, _config_from(DenoisedBenchConfig, args), bench_denoised, format_denoised)


def _bench_scaleout(args: argparse.Namespace) -> int:
    from .bench.common import write_json
    from .bench.scaleout import ScaleoutConfig, bench_scaleout, format_scaleout

    cfg = _config_from(ScaleoutConfig, args)
    result = bench_scaleout(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_scaleout(result))
    if args.json:
        write_json(result, args.json)
    return 0


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _field_flags() -> dict[str, dict[str, dict[str, Any]]]:
    """Per config class (by name), per field: the argparse keywords of its flag beyond the default and
    type that :func:`_config_flags` takes from the dataclass (choices, help, metavar; a type where the
    default's type cannot parse a flag, as for tuples)."""
    from .core.engine import PRECISIONS
    from .core.noise import NOISES
    from .infra.data import DATASETS
    from .models.classifiers import ARCHS

    compile_ = {"compile": dict(choices=["auto", "on", "off"])}
    certification = {  # which certification a benchmark runs
        "model": dict(choices=sorted(ARCHS)),
        "dataset": dict(choices=[k for k in DATASETS if k != "imagenet"]),
        "weights": dict(help="'random' or a state-dict .pt (e.g. a trained-model artifact)"),
        "noise": dict(choices=sorted(NOISES)),
        "images": dict(help="test images (from the embedded every-20th subset)"),
    }
    return {
        "BenchConfig": {
            **certification, **compile_,
            "sigmas": dict(type=_floats, metavar="S1,S2,...", help="mixed noise: image i is smoothed with sigma S[i %% k] "
                           "(each image carries its own noise)"),
            "precision": dict(choices=PRECISIONS),
            "threads": dict(help="torch threads (0: default)"),
            "repeats": dict(help="interleaved rounds (the table shows each quantity's best round)"),
            "forward_seconds": dict(help="seconds per raw-forward measurement"),
        },
        "ScaleoutConfig": {
            **certification,
            "procs": dict(type=_ints, metavar="K1,K2,..."),
            "device": dict(help="cpu, auto (each rank its own GPU) or a fixed device such as cuda:0"),
            "batch_size": dict(help="0: the engine's sweep"),
            "threads": dict(help="torch threads per process (0: cores / processes)"),
        },
        "DenoisedBenchConfig": compile_,
        "DualBenchConfig": {"Ds": dict(type=_floats, metavar="D1,D2,...", help="selector budgets D"),
                            "clip": dict(type=_floats, metavar="H_L,H_U", help="clipping of the selector's output")},
    }


def _config_flags(p: argparse.ArgumentParser, cls: type, names: str, **overrides: dict[str, Any]) -> None:
    """Add to ``p`` one flag per field of the config dataclass ``cls`` named in ``names`` (space-separated,
    in ``--help`` order): ``--batch-size`` for ``batch_size``, its default the field's, its type the
    default's (an int or a float; a string stays one), the rest from :func:`_field_flags`;
    ``overrides`` (field: keywords) change a flag for one command. :func:`_config_from` builds ``cls``
    back from the parsed arguments."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    table = _field_flags().get(cls.__name__, {})
    for name in names.split():
        kw = {"default": defaults[name], **table.get(name, {}), **overrides.get(name, {})}
        if "type" not in kw and type(kw["default"]) is not str:  # argparse passes strings through
            if type(kw["default"]) not in (int, float):
                raise TypeError(f"{cls.__name__}.{name}: give its flag a type in _field_flags")
            kw["type"] = type(kw["default"])
        p.add_argument("--" + name.replace("_", "-"), dest=name, **kw)


def _config_from(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` from parsed arguments: the fields that have a flag take its value, the others their default."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rsbook", description="The randomized-smoothing book: run chapters, build the book.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute one chapter with papermill", epilog=_run_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebook", help="chapter name (e.g. 00_randomized_smoothing) or path")
    p.add_argument("--list-parameters", action="store_true",
                   help="print the chapter's parameters with their defaults and what they do, and run nothing")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set a parameter (repeatable); unknown names are an error")
    p.add_argument("-o", "--output", help="executed notebook path (default: runs/<chapter>.ipynb)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    p.set_defaults(func=_run)

    b = sub.add_parser("book", help="execute every chapter and build the HTML book")
    b.add_argument("--profile", default="cpu", choices=PROFILES)
    b.add_argument("--only", nargs="+", metavar="CHAPTER", help="run only these chapters")
    b.add_argument("--no-html", action="store_true", help="execute the chapters but do not build the HTML")
    b.add_argument("--no-strict", action="store_true", help="do not turn Sphinx warnings into errors")
    b.add_argument("--no-api", action="store_true",
                   help="leave the API reference out of the HTML (a staged build only; most of the HTML build's time)")
    b.add_argument("--out", help="build a staged copy here (default: the checkout for profile cpu, _build/<profile> otherwise)")
    b.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="run up to N chapters at once, each in its own kernel on one torch thread (default 1; 0: one per CPU core)")
    b.set_defaults(func=_book)

    m = sub.add_parser("merge", help="merge the torchrun shards of a certification log (rank 0 does it by itself)",
                       description="Merge the per-rank shard logs of a certification run into one log ordered by image, "
                       "and, for a stored certification's work folder (<artifacts>/<chapter>/.work/<key>), store the "
                       "artifact with every shard's provenance. Refuses missing, duplicated or foreign shards and rows.")
    m.add_argument("path", help="the work folder holding log.partial.rank<r>-of-<K>.tsv, or the log's path")
    m.set_defaults(func=_merge)

    d = sub.add_parser("claims-diff", help="compare a build's claims files with the reference ones",
                       description="Compare every <chapter>.claims.json in REFERENCE with its counterpart in BUILT (claims, "
                       "values, intervals, verdicts; a number timed during the build by its verdict only). Exit 1 on any "
                       "difference; CI runs it on the published cpu build against book/claims/.")
    d.add_argument("reference", nargs="?", default="book/claims", help="folder of reference claims (default: book/claims)")
    d.add_argument("built", nargs="?", default="book/generated", help="folder of built claims (default: book/generated)")
    d.set_defaults(func=_claims_diff)

    sc = sub.add_parser("scorecard", help="count the verdicts of a folder of claims files",
                        description="Print how many claims of each chapter are reproduced, partly reproduced, not reproduced, "
                        "not comparable (and any other verdict) in FOLDER's <chapter>.claims.json files, per chapter and in all.")
    sc.add_argument("folder", nargs="?", default="book/claims", help="folder of claims files (default: book/claims)")
    sc.add_argument("--page", action="store_true", help="print the whole scorecard page (markdown) instead of the counts")
    sc.set_defaults(func=_scorecard)

    bench = sub.add_parser("bench", help="benchmarks").add_subparsers(dest="benchmark", required=True)
    c = bench.add_parser("certify", help="Smooth.certify on the engine vs the published certification loop",
                         description="Raw forward throughput, the published reference loop and Smooth.certify on the "
                         "same model, noise, N and images, in one process; prints a table and checks that both "
                         "give the same certificates.")
    from .bench.certify import BenchConfig

    _config_flags(c, BenchConfig, "model dataset weights noise sigma sigmas n0 n alpha images device precision compile batch_size seed "
                  "threads repeats forward_seconds",
                  batch_size=dict(help="batch of the engine and of both raw-forward measurements (0: each swept to its best)"))
    c.add_argument("--json", help="also write the result as JSON here")
    c.add_argument("--csv", help="also write the table as CSV here")
    c.add_argument("--force", action="store_true", help="overwrite --json/--csv files even with a run measured on a busy machine")
    c.set_defaults(func=_bench_certify)

    from .bench.scaleout import ScaleoutConfig

    t = bench.add_parser("scaleout", help="one certification under torchrun with 1, 2, ... processes",
                         description="Launches `torchrun --standalone --nproc-per-node=K` for each K in --procs on the same "
                         "certification (sharded by image, merged by rank 0) and prints the wall time, each rank's "
                         "certification seconds, the speed-up and whether the merged log equals the first K's.")
    _config_flags(t, ScaleoutConfig, "procs model dataset weights noise sigma n0 n alpha images device batch_size seed threads")
    t.add_argument("--json", help="also write the result as JSON here")
    t.set_defaults(func=_bench_scaleout)

    q = bench.add_parser("sequential", help="the sequential certifier vs fixed-N certify with N = n_max",
                         description="Forward passes, wall time and decisions at the given radii of fixed-N "
                         "certify and of the anytime-valid sequential certifier (n_max = --n), on the same images "
                         "and model, in one run.")
    _config_flags(q, BenchConfig, "model dataset weights noise sigma n0 n alpha images",
                  n=dict(default=10_000, help="fixed N, and the sequential run's n_max"))
    q.add_argument("--radii", type=_floats, default=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5), metavar="R1,R2,...")
    _config_flags(q, BenchConfig, "device precision compile batch_size seed threads")
    q.add_argument("--json", help="also write the result as JSON here")
    q.set_defaults(func=_bench_sequential)

    from .bench.denoised import DenoisedBenchConfig

    dn = bench.add_parser("denoised", help="denoised certification (chapter 1) vs raw forward and a one-sample loop",
                          description="The one-step and multi-step denoised classifiers of chapter 1 on the engine: "
                          "certification samples/s against the raw forward of denoiser + classifier, and the multi-step "
                          "path against a loop that denoises one noise sample at a time.")
    _config_flags(dn, DenoisedBenchConfig, "width levels steps n0 n images repeats seed threads sigma loop_samples forward_seconds "
                  "batch_size compile device")
    dn.add_argument("--json", help="also write the result as JSON here")
    dn.set_defaults(func=_bench_denoised)

    from .bench.dual import DualBenchConfig

    du = bench.add_parser("dual", help="dual-smoothing certification (chapter 4) vs raw forward of selector + classifier",
                          description="Chapter 4's dual-smoothing certificate (selector draws through the engine's values, "
                          "every noise level's counts through Smooth.certify_many, the sound radius) against the time the "
                          "raw forward throughputs of selector and classifier allow for the same passes.")
    _config_flags(du, DualBenchConfig, "classifier sigma n_h alpha_h n0 n Ds clip images repeats seed threads forward_seconds "
                  "batch_size device")
    du.add_argument("--json", help="also write the result as JSON here")
    du.set_defaults(func=_bench_dual)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rsbook: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
