"""Publishing the book: each chapter as a notebook to launch, and the launch links to it.

The pages of the book are the *executed* chapters (``book/generated/<chapter>.ipynb``), which
are built, not committed. What a reader launches is the chapter's committed, unexecuted twin,
``notebooks/<chapter>.ipynb``: the jupytext conversion of ``notebooks/<chapter>.md`` (cell ids
derived from the cells' content, so the file changes only where the chapter does), with its
``parameters`` cell as written and one cell, a no-op outside Google Colab, that fetches the
repository and installs the package on Colab. ``python -m rsbook.book.publish`` rewrites the
twins after a chapter changes; ``--check`` only reports stale ones (``tests/test_publishing.py``
fails on a stale twin).

Every launch link is derived from ``_config.yml`` (``repository`` and ``launch_buttons``) by
:func:`launch_links`. Listed in ``sphinx: extra_extensions``, this module is also a Sphinx
extension (:func:`setup`): on every chapter page it points Jupyter Book's Binder and Colab
buttons at the twin (Jupyter Book would point them at the page's own path, which is not in the
repository), offers the twin for download beside the executed notebook, and clears the API
reference's autosummary stubs (``book/api/``, written afresh by every build) before a build
starts.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

__all__ = [
    "TWIN_DIR",
    "API_STUBS",
    "book_config",
    "github_repository",
    "repo_path",
    "launch_links",
    "twin_of",
    "to_notebook",
    "write_ipynb",
    "sync_notebooks",
    "setup",
]

#: Where the chapters' sources and their committed ``.ipynb`` twins live, relative to the book's root.
TWIN_DIR = "notebooks"
#: Where autosummary writes the API reference's stub pages (gitignored; cleared before every build).
API_STUBS = "book/api"


def book_config(root: str | Path | None = None) -> dict[str, Any]:
    """The book's ``_config.yml``, parsed (``root`` defaults to the checkout)."""
    import yaml

    if root is None:
        from ..infra.paths import repo_root

        root = repo_root()
    return yaml.safe_load((Path(root) / "_config.yml").read_text())


def github_repository(config: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(owner, name, branch)`` of the book's GitHub repository, from ``config["repository"]``.

    Raises:
        ValueError: if ``repository.url`` is missing or not a ``https://github.com/<owner>/<name>`` URL.
    """
    repo = config.get("repository") or {}
    url = str(repo.get("url", ""))
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.netloc.lower() != "github.com" or len(parts) != 2:
        raise ValueError(f"repository.url in _config.yml must be https://github.com/<owner>/<name>, not {url!r}")
    name = parts[1][: -len(".git")] if parts[1].endswith(".git") else parts[1]
    return parts[0], name, str(repo.get("branch") or "main")


def repo_path(config: Mapping[str, Any], path: str | Path) -> str:
    """``path`` (relative to the book's root) relative to the repository's root, in POSIX form."""
    base = str((config.get("repository") or {}).get("path_to_book") or "").strip("/")
    rel = Path(path).as_posix().lstrip("/")
    return rel if base in ("", ".") else f"{base}/{rel}"


def launch_links(config: Mapping[str, Any], path: str | Path) -> dict[str, str]:
    """The links that open the notebook at ``path`` (relative to the book's root) from the repository.

    ``"github"`` always; ``"binder"`` and ``"colab"`` when ``launch_buttons`` in ``config`` has
    ``binderhub_url`` or ``colab_url``. Binder opens JupyterLab at the notebook
    (``labpath=``) when ``notebook_interface`` is ``jupyterlab``, else the classic tree
    (``urlpath=tree/``).
    """
    owner, name, branch = github_repository(config)
    rel = repo_path(config, path)
    links = {"github": f"https://github.com/{owner}/{name}/blob/{branch}/{rel}"}
    launch = config.get("launch_buttons") or {}
    binder = str(launch.get("binderhub_url") or "").rstrip("/")
    if binder:
        query = f"labpath={rel}" if launch.get("notebook_interface", "classic") == "jupyterlab" else f"urlpath=tree/{rel}"
        links["binder"] = f"{binder}/v2/gh/{owner}/{name}/{branch}?{query}"
    colab = str(launch.get("colab_url") or "").rstrip("/")
    if colab:
        links["colab"] = f"{colab}/github/{owner}/{name}/blob/{branch}/{rel}"
    return links


def twin_of(source: str | Path) -> Path:
    """The committed ``.ipynb`` twin of a chapter source ``notebooks/<chapter>.md``."""
    return Path(source).with_suffix(".ipynb")


def _colab_cell(config: Mapping[str, Any]) -> str:
    owner, name, branch = github_repository(config)
    base = str((config.get("repository") or {}).get("path_to_book") or "").strip("/")
    root = f"/content/{name}" + (f"/{base}" if base not in ("", ".") else "")
    return "\n".join([
        "# On Google Colab, fetch the book's repository (the chapter loads its committed artifacts) and",
        "# install the package; anywhere else this cell does nothing. The next cell holds the parameters.",
        "import os, subprocess, sys",
        'if "google.colab" in sys.modules:',
        f'    if not os.path.isdir("/content/{name}"):',
        f'        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "https://github.com/{owner}/{name}", "/content/{name}"], check=True)',
        f'        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", "/content/{name}"], check=True)',
        f'    os.chdir("{root}")',
        f'    sys.path.insert(0, "/content/{name}")',
    ])


def to_notebook(source: str | Path, config: Mapping[str, Any]):
    """The unexecuted notebook of the chapter ``source`` (a jupytext MyST file), ready to launch.

    The jupytext conversion with the kernel the book runs (``python3``), no jupytext metadata,
    cell ids from each cell's content, and the Colab set-up cell (see the module's docstring)
    just before the ``parameters`` cell.
    """
    import jupytext
    import nbformat

    nb = jupytext.read(Path(source))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    params = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(params) != 1:
        raise ValueError(f"{source} must have exactly one code cell tagged 'parameters', found {len(params)}")
    nb.cells.insert(params[0], nbformat.v4.new_code_cell(_colab_cell(config), metadata={"tags": ["colab-setup"]}))
    seen: dict[str, int] = {}
    for cell in nb.cells:
        digest = hashlib.sha1(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()[:8]
        seen[digest] = seen.get(digest, 0) + 1
        cell["id"] = digest if seen[digest] == 1 else f"{digest}-{seen[digest]}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def write_ipynb(source: str | Path, dst: str | Path, config: Mapping[str, Any] | None = None) -> Path:
    """Write the twin of the chapter ``source`` to ``dst`` (see :func:`to_notebook`) and return ``dst``.

    ``config`` defaults to the ``_config.yml`` of the book that ``source`` belongs to (the folder
    above ``notebooks/``).
    """
    import nbformat

    source, dst = Path(source), Path(dst)
    config = config if config is not None else book_config(source.resolve().parent.parent)
    nb = to_notebook(source, config)
    nbformat.validate(nb)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return dst


def sync_notebooks(root: str | Path | None = None, check: bool = False) -> list[Path]:
    """Bring every chapter's twin in ``root`` up to date; return the twins that were (``check``: are) stale.

    A twin is stale when it is missing or differs from :func:`write_ipynb`'s output. With
    ``check=True`` nothing is written. A twin without a chapter source is stale too (and removed).
    """
    import tempfile

    if root is None:
        from ..infra.paths import repo_root

        root = repo_root()
    root = Path(root)
    config = book_config(root)
    sources = sorted((root / TWIN_DIR).glob("*.md"))
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            fresh = write_ipynb(src, Path(tmp) / f"{src.stem}.ipynb", config)
            twin = twin_of(src)
            if not twin.exists() or twin.read_bytes() != fresh.read_bytes():
                stale.append(twin)
                if not check:
                    shutil.copyfile(fresh, twin)
    for orphan in sorted((root / TWIN_DIR).glob("*.ipynb")):
        if not orphan.with_suffix(".md").exists():
            stale.append(orphan)
            if not check:
                orphan.unlink()
    return stale


# --- the Sphinx extension ------------------------------------------------------------------------


def _clear_api_stubs(app, config) -> None:
    """Remove the stub pages of an earlier build, so autosummary writes them afresh.

    Jupyter Book (``only_build_toc_files``) excludes every page that exists when the build starts
    and is not in ``_toc.yml``; left in place, an earlier build's stubs would be excluded.
    """
    folder = Path(app.srcdir) / API_STUBS
    for stub in folder.glob("rsbook*.rst"):
        stub.unlink()


def _point_launch_buttons(app, pagename, templatename, context, doctree) -> None:
    """On a chapter page, point the theme's launch buttons at the chapter's twin and offer it for download."""
    from sphinx.util import logging

    groups = {b.get("label"): b for b in context.get("header_buttons", []) if b.get("type") == "group"}
    launch = groups.get("launch-buttons")
    if launch is None:  # not a notebook page, or no launch_buttons in _config.yml
        return
    logger = logging.getLogger(__name__)
    srcdir = Path(app.srcdir)
    chapter = Path(pagename).name
    twin = twin_of(srcdir / TWIN_DIR / f"{chapter}.md")
    if not twin.exists():
        logger.warning(f"{pagename}: no committed notebook {TWIN_DIR}/{twin.name} to launch; run "
                       "`python -m rsbook.book.publish` and commit it", location=pagename)
        context["header_buttons"].remove(launch)
        return
    try:
        links = launch_links(book_config(srcdir), twin.relative_to(srcdir))
    except ValueError as exc:
        logger.warning(f"{pagename}: {exc}", location=pagename)
        context["header_buttons"].remove(launch)
        return
    kept = []
    for button in launch["buttons"]:
        if button.get("type") != "link":
            kept.append(button)
        elif button.get("text", "").lower() in links:
            kept.append({**button, "url": links[button["text"].lower()]})
        else:
            logger.warning(f"{pagename}: launch button {button.get('text')!r} is not supported for chapter notebooks; "
                           "use binderhub_url and colab_url", location=pagename)
    launch["buttons"] = kept
    download = groups.get("download-buttons")
    if download is not None:
        out = Path(app.outdir) / "_notebooks" / twin.name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(twin, out)
        for button in download["buttons"]:
            if button.get("label") == "download-notebook-button":
                button["text"] = ".ipynb (executed)"
        download["buttons"].insert(0, {
            "type": "link",
            "url": f"{context['pathto']('_notebooks', 1)}/{twin.name}",
            "text": ".ipynb (to run)",
            "icon": "fas fa-play",
            "tooltip": "Download the chapter as a notebook to run: unexecuted, with its parameters cell",
            "label": "download-twin-button",
        })


def setup(app) -> dict[str, Any]:
    """The Sphinx extension (see the module's docstring)."""
    app.connect("config-inited", _clear_api_stubs, priority=800)  # before sphinx-external-toc (900) lists the pages
    app.connect("html-page-context", _point_launch_buttons, priority=502)  # after the theme's buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rsbook.book.publish",
                                     description="Write each chapter's unexecuted .ipynb twin (notebooks/<chapter>.ipynb).")
    parser.add_argument("--check", action="store_true", help="only list stale twins; exit 1 if any")
    args = parser.parse_args(argv)
    stale = sync_notebooks(check=args.check)
    for path in stale:
        print(f"{'stale' if args.check else 'wrote'}: {path}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
