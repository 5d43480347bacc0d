"""The book pipeline: papermill executes each jupytext chapter, then Jupyter Book renders.

``run_notebook`` validates parameters against the chapter's ``parameters`` cell (papermill
itself only warns about unknown names), executes it with papermill and records run time,
device and outcome; the rendered notebook shows one parameters cell holding the values the
run used. ``build_book`` runs every chapter (``jobs`` of them at once, each in its own kernel),
writes the status page and the scorecard (:mod:`rsbook.book.scorecard`, from the claims files the
chapters wrote), builds the HTML with Jupyter Book (notebook execution off), and fails if any
chapter failed -- after building, so the failed notebook and its traceback are on the page.

The published book (profile ``cpu``) is built in the checkout (``book/generated/``,
``_build/html``). Any other profile, or an explicit ``out_dir``, builds a staged copy of the
book's sources in ``_build/<profile>/`` (or ``out_dir``), so a smoke or dry-run build never
replaces the published one.
"""

from __future__ import annotations

import ast
import getpass
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..infra.distributed import resolve_device
from ..infra.paths import repo_root
from .profiles import TEMPORARY_PROFILES, check_profile
from .scorecard import markdown_cell as _cell
from .scorecard import scorecard_page

__all__ = [
    "UnknownParameterError",
    "read_parameters",
    "Parameter",
    "parameter_docs",
    "format_parameters",
    "coerce_parameters",
    "run_notebook",
    "build_book",
    "chapters",
    "toc_order",
    "build_versions",
    "stage_sources",
    "drop_api_reference",
    "KERNEL_ARGUMENTS",
]

#: Arguments for every chapter's kernel: its log carries only harmless noise on a healthy run
#: ("running over TCP without encryption" on loopback, "KeyboardInterrupt caught in kernel" at
#: shutdown). A real failure still shows: as the cell's traceback, or as papermill's dead-kernel error.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]


class UnknownParameterError(ValueError):
    """A parameter that the notebook's ``parameters`` cell does not define."""


def chapters(root: Path | None = None) -> list[Path]:
    """The chapter sources, in book order (``notebooks/*.md``, sorted by name)."""
    root = root or repo_root()
    return sorted((root / "notebooks").glob("*.md"))


def toc_order(paths: Sequence[Path], root: Path | None = None) -> list[Path]:
    """``paths`` (chapter sources) in the order their pages appear in ``_toc.yml``
    (``book/generated/<stem>``); a chapter the table of contents does not name comes after, by name."""
    import yaml

    root = root or repo_root()
    toc = root / "_toc.yml"
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(re.sub(r"\.(md|ipynb)$", "", node["file"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(toc.read_text()) if toc.exists() else None)
    position = {f: i for i, f in reversed(list(enumerate(files)))}
    return sorted(paths, key=lambda p: (position.get(f"book/generated/{Path(p).stem}", len(files)), Path(p).name))


def notebook_source(name: str | Path, root: Path | None = None) -> Path:
    """Resolve ``00_randomized_smoothing``, ``notebooks/00_randomized_smoothing.md`` or a path."""
    p = Path(name)
    if p.exists():
        return p.resolve()
    root = root or repo_root()
    for cand in (root / "notebooks" / p.name, root / "notebooks" / f"{p.name}.md"):
        if cand.exists():
            return cand
    known = ", ".join(c.stem for c in chapters(root))
    raise FileNotFoundError(f"no notebook {str(name)!r}; the chapters are: {known}")


def _read(path: Path):
    import jupytext

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _parameter_cell(nb, path) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} must have exactly one code cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def read_parameters(path: str | Path) -> dict[str, Any]:
    """The names and default values of the cell tagged ``parameters`` (plain literals only)."""
    cell = _parameter_cell(_read(Path(path)), path)
    params: dict[str, Any] = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            params[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            params[node.target.id] = ast.literal_eval(node.value)
        else:
            raise ValueError(f"{path}: the parameters cell may hold only `name = literal` lines")
    return params


@dataclass(frozen=True)
class Parameter:
    """One assignment of a chapter's ``parameters`` cell: its name, default and trailing ``# comment``."""

    name: str
    default: Any
    comment: str = ""


def parameter_docs(path: str | Path) -> list[Parameter]:
    """Every parameter of the cell tagged ``parameters``, in source order, with its default
    (as :func:`read_parameters` gives it) and the ``# comment`` that ends its line ("" if none)."""
    import io
    import tokenize

    source = _parameter_cell(_read(Path(path)), path).source
    defaults = read_parameters(path)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    out = []
    for node in ast.parse(source).body:
        name = (node.targets[0] if isinstance(node, ast.Assign) else node.target).id  # type: ignore[union-attr]
        out.append(Parameter(name, defaults[name], comments.get(node.end_lineno or node.lineno, "")))
    return out


def format_parameters(path: str | Path) -> str:
    """The parameters of a chapter as text, one per line: ``name = default  # comment``."""
    params = parameter_docs(path)
    width = max((len(f"{p.name} = {p.default!r}") for p in params), default=0)
    return "\n".join((f"{p.name} = {p.default!r}".ljust(width) + f"  # {p.comment}") if p.comment else f"{p.name} = {p.default!r}"
                     for p in params)


def coerce_parameters(given: Mapping[str, Any], defaults: Mapping[str, Any], notebook: str = "notebook") -> dict[str, Any]:
    """Check names against ``defaults`` and turn command-line strings into the defaults' types.

    Raises:
        UnknownParameterError: for a name the notebook does not define.
        ValueError: for a value that cannot take the default's type.
    """
    out = {}
    for name, value in given.items():
        if name not in defaults:
            raise UnknownParameterError(f"{notebook} has no parameter {name!r}; its parameters are: {', '.join(sorted(defaults))}")
        default = defaults[name]
        if isinstance(value, str) and not isinstance(default, str):
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise ValueError(f"parameter {name}={value!r} is not a Python literal (the default is {default!r})") from None
        if isinstance(default, bool) or isinstance(value, bool):
            wrong = type(default) is not type(value)
        elif isinstance(default, int):
            wrong = not isinstance(value, int)
        elif isinstance(default, float):
            wrong = not isinstance(value, (int, float))
        else:
            wrong = not isinstance(value, type(default))
        if wrong:
            raise ValueError(f"parameter {name}={value!r} has the wrong type; the default is {default!r}")
        if isinstance(default, float) and isinstance(value, int):
            value = float(value)
        out[name] = value
    return out


def _merge_parameter_cells(output: Path, params: Mapping[str, Any]) -> None:
    """Show one parameters cell: the original one, holding the values this run used.

    papermill injects a second cell with the overridden values; the rendered page would show
    both. The original cell's assignments that the run changed get its values (marked
    ``# set for this run``) and the injected cell is tagged ``remove-cell``.
    """
    import nbformat

    nb = nbformat.read(output, as_version=4)
    original = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    injected = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" in c.metadata.get("tags", [])]
    if len(original) != 1 or not injected:
        return
    lines = original[0].source.splitlines()
    for node in ast.parse(original[0].source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target  # type: ignore[union-attr]
        if target.id in params and params[target.id] != ast.literal_eval(node.value):
            i = node.lineno - 1
            lines[i] = f"{target.id} = {params[target.id]!r}  # set for this run (default: {ast.get_source_segment(original[0].source, node.value)})"
    original[0].source = "\n".join(lines)
    for cell in injected:
        cell.metadata["tags"] = [*cell.metadata.get("tags", []), "remove-cell"]
    nbformat.write(nb, output)


@dataclass
class RunResult:
    chapter: str
    profile: str
    status: str  # "ok" or "failed"
    seconds: float
    device: str
    output: str
    error: str = ""
    finished_utc: str = ""


def run_notebook(
    source: str | Path,
    output: str | Path,
    parameters: Mapping[str, Any] | None = None,
    cwd: str | Path | None = None,
    log_output: bool = False,
    tmp_dir: str | Path | None = None,
    threads: int | None = None,
) -> RunResult:
    """Execute a chapter with papermill into ``output`` (``.ipynb``), after checking its parameters.

    ``threads``: the kernel's CPU threads (``OMP_NUM_THREADS``, which torch reads at start-up;
    default: the caller's environment, else torch's default, one per core).

    The executed notebook is written even when a cell fails (with the traceback in it); the
    result then has ``status="failed"``. The chapter's claims, if it records any, are written
    beside it as ``<output stem>.claims.json`` (an older file there is removed first, so the file
    is always this run's).

    Safe to call from several threads at once: the kernel gets its environment and working
    folder (``cwd``, default the checkout) at its start, and this process's ``os.environ`` and
    working folder are never changed.

    Nothing the run writes to temporary folders outlives it, failed or not: the kernel's
    ``TMPDIR`` and ``RSBOOK_TMP`` (where the ``smoke`` and ``dry_run`` artifact stores go, see
    :mod:`rsbook.book.profiles`) point into a folder removed when the run ends. ``tmp_dir``
    gives ``RSBOOK_TMP`` instead (a folder the caller removes: under torchrun, rank 0's stores,
    which every rank uses, must outlive rank 0's own run).
    """
    import papermill as pm

    source = notebook_source(source)
    defaults = read_parameters(source)
    params = coerce_parameters(parameters or {}, defaults, source.stem)
    if "profile" in params:
        check_profile(params["profile"])
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if "device" in params:  # a bad device name fails here, with the fix, not after a kernel start
        resolve_device(params["device"], params.get("profile"))
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    claims = output.with_suffix(".claims.json")
    claims.unlink(missing_ok=True)  # a stale file must not pass for this run's claims
    cwd = (Path(cwd) if cwd else repo_root()).resolve()
    with tempfile.TemporaryDirectory(prefix="rsbook-run-", ignore_cleanup_errors=True) as tmp:
        src_nb = Path(tmp) / f"{source.stem}.ipynb"
        import nbformat

        nbformat.write(_read(source), src_nb)
        info_path = Path(tmp) / "run_info.json"
        # The kernel gets this process's environment plus where to write run info and claims,
        # and inline figures (a caller's MPLBACKEND=Agg would silently drop them). Both it and
        # the working folder go to the kernel's start only (papermill's own ``cwd`` would
        # os.chdir the whole process, which concurrent runs would undo for one another).
        env = {"RSBOOK_RUN_INFO": str(info_path), "RSBOOK_CLAIMS": str(claims),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline", **_temporary_env(Path(tmp), tmp_dir)}
        if threads is not None:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        t0 = time.perf_counter()
        error = ""
        try:
            pm.execute_notebook(str(src_nb), str(output), parameters=params, kernel_name="python3", log_output=log_output,
                                progress_bar=False, extra_arguments=KERNEL_ARGUMENTS,
                                kernel_manager_class=_kernel_manager_class(env, cwd))
            status = "ok"
        except pm.PapermillExecutionError as exc:
            status, error = "failed", f"{exc.ename}: {exc.evalue}"
        seconds = time.perf_counter() - t0
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if output.exists():
        _merge_parameter_cells(output, params)
    return RunResult(
        chapter=source.stem,
        profile=str(params.get("profile", defaults.get("profile", "?"))),
        status=status,
        seconds=round(seconds, 1),
        device=info.get("device", "unknown (the notebook failed before its provenance cell)"),
        output=str(output),
        error=error,
        finished_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _kernel_manager_class(env: Mapping[str, str], cwd: Path) -> type:
    """A kernel manager class (for nbclient's ``kernel_manager_class``) whose kernel starts in
    ``cwd`` with ``env`` added to this process's environment, leaving the process's own alone."""
    from jupyter_client.manager import AsyncKernelManager

    extra, folder = dict(env), str(cwd)

    class RunKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:  # a restart reuses these launch arguments
            kw["env"] = {**os.environ, **kw.get("env", {}), **extra}
            kw.setdefault("cwd", folder)
            await super().start_kernel(**kw)

    return RunKernelManager


def _temporary_env(tmp: Path, stores: str | Path | None) -> dict[str, str]:
    """The kernel's temporary folders, inside ``tmp`` (``stores``, if given, for ``RSBOOK_TMP``).

    ``TMPDIR`` sends every ``tempfile`` folder of the kernel and its subprocesses (e.g. a
    benchmark's torchrun stores) into ``tmp``; torch.compile's cache stays where it was, so it
    still serves later runs.
    """
    (tmp / "tmp").mkdir()
    env = {"TMPDIR": str(tmp / "tmp"), "RSBOOK_TMP": str(Path(stores).resolve() if stores else tmp / "stores")}
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):  # torch's default, from the temporary folder outside the run
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / ("torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user)))
    return env


#: The packages whose versions the status page shows (keys of :func:`rsbook.infra.provenance.provenance`).
_VERSIONS = ("python", "torch", "torchvision", "numpy", "scipy", "rsbook", "git_commit")


def build_versions() -> dict[str, str]:
    """The versions this build ran with: python, torch, torchvision, numpy, scipy, rsbook and its
    git commit (from :func:`rsbook.infra.provenance.provenance`; the kernels share this environment)."""
    from ..infra.provenance import provenance

    info = provenance("cpu")
    return {k: info[k] for k in _VERSIONS}


def _status_page(results: list[RunResult], profile: str, versions: Mapping[str, str] | None = None,
                 wall_seconds: float | None = None, jobs: int = 1) -> str:
    versions = build_versions() if versions is None else versions
    lines = [
        "# Build status",
        "",
        f"Every chapter of this build was executed by papermill at profile `{profile}` just before the",
        "HTML was rendered. A failed chapter is still shown, with its traceback, and fails the build.",
        "",
    ]
    if wall_seconds is not None:
        at_once = f", up to {jobs} chapters at a time" if jobs > 1 else ", one chapter at a time"
        lines += [f"The chapters took {wall_seconds:.0f} s of wall time in all{at_once}. The build ran with:", ""]
    else:
        lines += ["The build ran with:", ""]
    lines += [f"- {k.replace('_', ' ')}: `{v}`" for k, v in versions.items()]
    lines += [
        "",
        "| chapter | profile | outcome | run time | device | finished (UTC) |",
        "|---|---|---|---|---|---|",
    ]
    failed = [r for r in results if r.status != "ok"]
    for r in results:
        outcome = "ok" if r.status == "ok" else f"**FAILED** ([why](#failed-{_anchor(r.chapter)}))"
        lines.append(f"| {_cell(r.chapter)} | {_cell(r.profile)} | {outcome} | {r.seconds:.0f} s | {_cell(r.device)} | {_cell(r.finished_utc)} |")
    for r in failed:  # the whole message, below the table
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", r.error)), default=0))
        lines += ["", f"(failed-{_anchor(r.chapter)})=", f"## {r.chapter} failed", "",
                  "The chapter's page shows the cell that failed, with its traceback. The error:", "",
                  f"{fence}text", r.error or "(no message)", fence]
    return "\n".join(lines) + "\n"


def _anchor(name: str) -> str:
    """A MyST label for ``name``: lowercase letters, digits and hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "chapter"


def _cell(text: str) -> str:
    """``text`` as one markdown table cell: on one line, its pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


#: What a staged build copies: the sources Jupyter Book reads (never artifacts or earlier builds).
_STAGED = ("_config.yml", "_toc.yml", "book", "notebooks")


def stage_sources(root: Path, dst: Path) -> Path:
    """Copy the book's sources from ``root`` into ``dst`` (replacing an earlier copy) and return it.

    Committed artifacts stay where they are (the chapters find them through the checkout);
    earlier generated pages are not copied.
    """
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("artifacts", "generated", ".*")
    for name in _STAGED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)
    return dst


#: What a staged build without the API reference shows at ``book/api`` (links to it still resolve).
_API_PLACEHOLDER = ("# API reference\n\nThis build of the book leaves the API reference out (`build_book(api_reference=False)`, "
                    "`rsbook book --no-api`); the published book has it.\n")


def drop_api_reference(src_root: Path) -> None:
    """Leave the API reference out of the staged book in ``src_root``: ``book/api.md`` becomes a
    placeholder page, autosummary writes no stubs, and the chapters' Python roles (``{py:mod}`` ...),
    which then have no target, are not reported by the strict (``-n``) build."""
    import yaml

    (src_root / "book" / "api.md").write_text(_API_PLACEHOLDER)
    config_path = src_root / "_config.yml"
    config = yaml.safe_load(config_path.read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["autosummary_generate"] = False
    sphinx_config["nitpick_ignore_regex"] = [*sphinx_config.get("nitpick_ignore_regex", []), ["py:.*", ".*"]]
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _workers(jobs: int) -> int:
    """How many chapters run at once for ``jobs`` (0: one per CPU core this process may use)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ValueError(f"jobs must be a non-negative integer (0: one per CPU core), got {jobs!r}")
    if jobs:
        return jobs
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _run_all(todo: Sequence[Path], workers: int, run: Callable[[Path], RunResult]) -> list[RunResult]:
    """``run`` every chapter of ``todo``, ``workers`` at a time, started in ``todo``'s order; the
    results come back in that order too, whatever order they finish in."""
    def report(r: RunResult) -> None:
        print(f"[rsbook] {r.chapter}: {r.status} in {r.seconds:.0f} s on {r.device}" + (f" -- {r.error}" if r.error else ""), flush=True)

    if workers <= 1 or len(todo) <= 1:
        results = []
        for src in todo:
            results.append(run(src))
            report(results[-1])
        return results
    pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="rsbook-chapter")
    try:  # the pool takes its queue in submission order: the first chapters start first
        futures = {pool.submit(run, src): i for i, src in enumerate(todo)}
        done: dict[int, RunResult] = {}
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            report(done[futures[f]])
    finally:  # on an interrupt, chapters not yet started are not started
        pool.shutdown(wait=True, cancel_futures=True)
    return [done[i] for i in range(len(todo))]


def build_book(
    profile: str = "cpu",
    only: list[str] | None = None,
    build_html: bool = True,
    strict: bool = True,
    out_dir: str | Path | None = None,
    jobs: int = 1,
    api_reference: bool = True,
) -> int:
    """Execute every chapter at ``profile`` and build the HTML; returns 0 if all ran and the book built.

    ``cpu`` without ``out_dir`` builds the published book in the checkout
    (``book/generated/``, ``_build/html``); otherwise a staged copy is built in ``out_dir``
    (default ``_build/<profile>``), whose HTML ends up in ``<out_dir>/src/_build/html``.

    ``jobs`` chapters run at once (each is its own kernel, with ``cores // jobs`` torch threads
    unless ``OMP_NUM_THREADS`` is set; ``0``: one per CPU core), started in table-of-contents
    order; the status page, the scorecard and ``status.json`` list them in that order, whatever
    order they finish in. At ``smoke`` and ``dry_run`` the chapters share one folder of temporary
    stores, removed at the end (a chapter that loads another's models reuses them).

    ``api_reference=False`` (staged builds only) leaves the API reference out of the HTML
    (:func:`drop_api_reference`): the chapters' API links render as plain text. Generating it is
    most of the HTML build; the published book always has it.

    Raises:
        ValueError: for a negative ``jobs``, an unknown ``profile``, or ``api_reference=False``
            for the published book.
    """
    check_profile(profile)
    workers = _workers(jobs)
    root = repo_root()
    staged = out_dir is not None or profile != "cpu"
    if not api_reference and not staged:
        raise ValueError("the published book (profile cpu in the checkout) always has its API reference: "
                         "build a staged copy (out_dir=...) to leave it out")
    src_root = stage_sources(root, Path(out_dir or root / "_build" / profile) / "src") if staged else root
    if not api_reference:
        drop_api_reference(src_root)
    gen = src_root / "book" / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    todo = [src for src in toc_order(chapters(root), root) if not only or src.stem in only]

    # smoke / dry_run: the chapters share one folder of temporary stores (removed at the end), so
    # a chapter that loads other chapters' models (the leaderboard) finds them instead of
    # training them again; the store's lock makes a model two chapters need at once trained once
    stores = tempfile.TemporaryDirectory(prefix="rsbook-book-stores-", ignore_cleanup_errors=True) if profile in TEMPORARY_PROFILES else None

    # chapters at once share the cores: each kernel gets its share of threads (a caller's
    # OMP_NUM_THREADS wins), since torch's default, one thread per core in every kernel,
    # oversubscribes the machine and slows every chapter down several times
    threads = None if workers <= 1 or os.environ.get("OMP_NUM_THREADS") else max(1, _workers(0) // workers)

    def run(src: Path) -> RunResult:
        print(f"[rsbook] running {src.stem} at profile={profile} ...", flush=True)
        return run_notebook(src, gen / f"{src.stem}.ipynb", {"profile": profile}, cwd=root,
                            tmp_dir=stores.name if stores else None, threads=threads)

    t0 = time.perf_counter()
    try:
        results = _run_all(todo, workers, run)
    finally:
        if stores:
            stores.cleanup()
    wall = time.perf_counter() - t0
    (gen / "status.md").write_text(_status_page(results, profile, build_versions(), wall, min(workers, max(len(todo), 1))))
    (gen / "status.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    (gen / "scorecard.md").write_text(scorecard_page(gen, profile, [r.chapter for r in results],
                                                     failed=[r.chapter for r in results if r.status != "ok"]))
    ok = all(r.status == "ok" for r in results)
    if build_html:
        cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(src_root), "--builder", "html"]
        if strict:
            cmd += ["-W", "-n", "--keep-going"]
        print("[rsbook] jupyter-book " + " ".join(cmd[3:]), flush=True)
        index = src_root / "_build" / "html" / "index.html"
        index.unlink(missing_ok=True)
        built = subprocess.run(cmd, cwd=src_root).returncode == 0 and index.exists()
        print(f"[rsbook] HTML {'built' if built else 'build FAILED'}: {index}", flush=True)
        ok = ok and built
    if not ok:
        failed = [r.chapter for r in results if r.status != "ok"]
        print(f"[rsbook] FAILED chapters: {failed or 'none'}; see {gen / 'status.md'}", file=sys.stderr, flush=True)
    return 0 if ok else 1
