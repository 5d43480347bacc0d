"""Publishing: the chapters' committed .ipynb twins, the launch links, and the book's configuration for them
and for the API reference (no HTML build here; the slow book build renders both)."""

from __future__ import annotations

import ast
import re
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from rsbook.book import publish
from rsbook.book.pipeline import chapters, read_parameters

REPO = Path(__file__).resolve().parents[1]
FIX = "run `python -m rsbook.book.publish` and commit notebooks/*.ipynb"


def _params_cell(nb):
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    return cell


@pytest.mark.parametrize("source", chapters(REPO), ids=lambda p: p.stem)
def test_every_chapter_has_a_committed_twin_identical_to_a_fresh_conversion(source, tmp_path):
    twin = publish.twin_of(source)
    assert twin.exists(), f"{twin.name} is missing: {FIX}"
    fresh = publish.write_ipynb(source, tmp_path / twin.name)
    assert fresh.read_bytes() == twin.read_bytes(), f"{twin.name} is stale: {FIX}"


def test_no_twin_without_its_chapter():
    orphans = [p.name for p in (REPO / publish.TWIN_DIR).glob("*.ipynb") if not p.with_suffix(".md").exists()]
    assert not orphans, f"twins without a chapter source: {orphans}; {FIX}"


@pytest.mark.parametrize("source", chapters(REPO), ids=lambda p: p.stem)
def test_a_twin_keeps_the_parameters_cell_as_written_and_has_no_outputs(source):
    twin = publish.twin_of(source)
    nb = nbformat.read(twin, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    import jupytext

    assert _params_cell(nb).source == _params_cell(jupytext.read(source)).source
    for node in ast.parse(_params_cell(nb).source).body:  # plain `name = literal` lines, as papermill and Colab forms need
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), ast.dump(node)
        ast.literal_eval(node.value)
    assert read_parameters(twin) == read_parameters(source)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    setup = [i for i, c in enumerate(nb.cells) if "colab-setup" in c.metadata.get("tags", [])]
    assert setup == [nb.cells.index(_params_cell(nb)) - 1]  # the Colab cell comes just before the parameters


def test_the_colab_cell_does_nothing_outside_colab(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    nb = publish.to_notebook(chapters(REPO)[0], publish.book_config(REPO))
    (cell,) = [c for c in nb.cells if "colab-setup" in c.metadata.get("tags", [])]
    path = list(sys.path)
    exec(compile(cell.source, "colab-setup", "exec"), {})
    assert Path.cwd() == tmp_path and sys.path == path
    owner, name, branch = publish.github_repository(publish.book_config(REPO))  # on Colab: the repository of _config.yml
    assert f'"--branch", "{branch}", "https://github.com/{owner}/{name}"' in cell.source


CONFIG = {
    "repository": {"url": "https://github.com/someone/somebook", "path_to_book": "docs/", "branch": "dev"},
    "launch_buttons": {"notebook_interface": "jupyterlab", "binderhub_url": "https://mybinder.org/",
                       "colab_url": "https://colab.research.google.com"},
}


def test_launch_links_from_a_hand_written_config():
    assert publish.launch_links(CONFIG, "notebooks/00_x.ipynb") == {
        "github": "https://github.com/someone/somebook/blob/dev/docs/notebooks/00_x.ipynb",
        "binder": "https://mybinder.org/v2/gh/someone/somebook/dev?labpath=docs/notebooks/00_x.ipynb",
        "colab": "https://colab.research.google.com/github/someone/somebook/blob/dev/docs/notebooks/00_x.ipynb",
    }
    classic = {"repository": {"url": "https://github.com/a/b.git"}, "launch_buttons": {"binderhub_url": "https://hub.example"}}
    assert publish.launch_links(classic, "n.ipynb") == {
        "github": "https://github.com/a/b/blob/main/n.ipynb",
        "binder": "https://hub.example/v2/gh/a/b/main?urlpath=tree/n.ipynb",
    }
    with pytest.raises(ValueError, match="must be https://github.com/<owner>/<name>"):
        publish.launch_links({"repository": {"url": "https://gitlab.com/a/b"}}, "n.ipynb")


def test_config_has_the_repository_the_launch_buttons_and_the_api_extensions():
    config = publish.book_config(REPO)
    assert set(config["repository"]) == {"url", "path_to_book", "branch"}
    publish.github_repository(config)  # a GitHub URL, which Binder and Colab need
    launch = config["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org" and launch["colab_url"] == "https://colab.research.google.com"
    assert launch["notebook_interface"] in ("classic", "jupyterlab")
    assert config["html"]["use_repository_button"] is True and config["html"]["use_issues_button"] is True
    ext = config["sphinx"]["extra_extensions"]
    assert {"sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", "rsbook.book.publish"} <= set(ext)
    sphinx = config["sphinx"]["config"]
    assert sphinx["autosummary_generate"] is True
    assert all((REPO / t / "autosummary" / "module.rst").exists() for t in sphinx["templates_path"])
    assert "notebooks/*" in config["exclude_patterns"] and "rsbook/*" in config["exclude_patterns"]


def test_nitpicky_references_into_rsbook_still_count():
    import re

    kind, target = publish.book_config(REPO)["sphinx"]["config"]["nitpick_ignore_regex"][0]
    assert re.fullmatch(kind, "py:class") and re.fullmatch(target, "torch.Tensor") and re.fullmatch(target, "Path")
    assert not re.fullmatch(target, "rsbook.core.certify.Smooth")


def test_the_api_page_is_in_the_toc_and_its_stubs_are_gitignored():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert "book/api" in files
    api = (REPO / "book" / "api.md").read_text()
    stubs = Path(publish.API_STUBS)
    assert f":toctree: {stubs.relative_to('book').as_posix()}" in api  # autosummary writes where the extension clears
    for sub in ("core", "infra", "models", "methods", "training", "runs", "bench", "book", "papers"):
        assert f"   rsbook.{sub}\n" in api
    assert f"/{stubs.as_posix()}/" in (REPO / ".gitignore").read_text().splitlines()


def test_binder_finds_the_environment_at_the_root():
    # repo2docker reads binder/ or .binder/ first and ignores the root when either exists
    assert not (REPO / "binder").exists() and not (REPO / ".binder").exists()
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert "-e ." in pip  # the package itself, which repo2docker installs from the whole repository


def _theme_buttons(page: str) -> list[dict]:
    """The header buttons sphinx-book-theme makes for a notebook page (the parts the extension reads)."""
    bad = f"book/generated/{page}.ipynb"
    return [
        {"type": "group", "label": "download-buttons", "buttons": [
            {"type": "link", "label": "download-notebook-button", "text": ".ipynb", "url": f"../../_sources/{bad}"},
            {"type": "link", "label": "download-source-button", "text": ".ipynb", "url": f"../../_sources/{bad}"}]},
        {"type": "group", "label": "launch-buttons", "buttons": [
            {"type": "link", "text": "Binder", "url": f"https://mybinder.org/v2/gh/rsbook/rsbook/main?urlpath=lab/tree/{bad}"},
            {"type": "link", "text": "Colab", "url": f"https://colab.research.google.com/github/rsbook/rsbook/blob/main/{bad}"}]},
    ]


def test_the_extension_points_a_chapter_pages_launch_buttons_at_its_twin(tmp_path):
    source = chapters(REPO)[0]
    page = f"book/generated/{source.stem}"
    context = {"header_buttons": _theme_buttons(source.stem), "pathto": lambda name, resource=0: f"../../{name}"}
    publish._point_launch_buttons(SimpleNamespace(srcdir=str(REPO), outdir=str(tmp_path)), page, "page.html", context, None)
    groups = {g["label"]: g for g in context["header_buttons"]}
    links = publish.launch_links(publish.book_config(REPO), f"notebooks/{source.stem}.ipynb")
    assert {b["text"]: b["url"] for b in groups["launch-buttons"]["buttons"]} == {"Binder": links["binder"], "Colab": links["colab"]}
    assert links["binder"].endswith(f"?labpath=notebooks/{source.stem}.ipynb")
    twin = groups["download-buttons"]["buttons"][0]
    assert twin["url"] == f"../../_notebooks/{source.stem}.ipynb"
    assert (tmp_path / "_notebooks" / f"{source.stem}.ipynb").read_bytes() == publish.twin_of(source).read_bytes()
    assert json.loads((tmp_path / "_notebooks" / f"{source.stem}.ipynb").read_text())["cells"]


def test_the_extension_drops_launch_buttons_it_cannot_point_at_a_twin(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_config.yml").write_text((REPO / "_config.yml").read_text())
    context = {"header_buttons": _theme_buttons("nb"), "pathto": lambda name, resource=0: name}
    app = SimpleNamespace(srcdir=str(tmp_path), outdir=str(tmp_path / "out"))
    publish._point_launch_buttons(app, "book/generated/nb", "page.html", context, None)
    assert [g["label"] for g in context["header_buttons"]] == ["download-buttons"]


ROLE = re.compile(r"\{py:(class|func|meth|mod|data|attr|obj|exc)\}`~?([^`<]*?)(?:\s*<([^>]+)>)?`")
API_PACKAGES = ("core", "infra", "models", "methods", "training", "runs", "bench", "book", "papers")


def documented(target: str) -> bool:
    """Whether the API reference (book/api.md, template book/_templates/autosummary/module.rst) documents ``target``:
    a public module of one of its packages; a name a (non-package) module exports (its ``__all__``, else every public
    name it defines; data only with a ``#:`` doc comment); or a public attribute of such a class, defined on the class itself."""
    import importlib
    import inspect

    parts = target.split(".")
    if parts[0] != "rsbook" or len(parts) < 2 or parts[1] not in API_PACKAGES or any(p.startswith("_") for p in parts[1:]):
        return False
    for i in range(len(parts), 1, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        rest = parts[i:]
        if not rest:
            return True
        if hasattr(module, "__path__"):  # a package's page lists its modules only
            return False
        exported = getattr(module, "__all__", None)
        obj = getattr(module, rest[0], None)
        if obj is None or (rest[0] not in exported if exported is not None else getattr(obj, "__module__", module.__name__) != module.__name__):
            return False
        if len(rest) == 1:  # module data is documented only with a ``#:`` doc comment (autodoc skips it otherwise)
            from sphinx.pycode import ModuleAnalyzer

            return (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj)
                    or ("", rest[0]) in ModuleAnalyzer.for_module(module.__name__).find_attr_docs())
        return len(rest) == 2 and inspect.isclass(obj) and rest[1] in vars(obj)
    return False


def test_documented_knows_what_the_api_reference_holds():
    assert documented("rsbook.core.certify.Smooth") and documented("rsbook.core.certify.Smooth.certify")
    assert documented("rsbook.core.certify") and documented("rsbook.papers") and documented("rsbook.core.certify.max_certified_radius")
    assert not documented("rsbook.core.Smooth")  # a package re-export: link its home, rsbook.core.certify.Smooth
    assert not documented("rsbook.core.certify.nothing_here") and not documented("torch.Tensor")
    assert documented("rsbook.book.claims.VERDICTS") and not documented("rsbook.book.claims.MARGIN")  # `#:` or not


def test_every_api_role_in_the_chapters_names_a_documented_object():
    """A chapter may link the API with MyST roles, e.g. {py:class}`rsbook.core.certify.Smooth`; the nitpicky
    build fails on a target that is not documented, and this says which, without building."""
    missing = [(src.name, m.group(0)) for src in [*chapters(REPO), *(REPO / "book").glob("*.md")]
               for m in ROLE.finditer(src.read_text()) if not documented(m.group(3) or m.group(2))]
    assert not missing, f"API roles whose target the API reference does not document (use the defining module's name): {missing}"


def test_every_chapter_links_the_api_of_the_code_it_calls():
    """Each chapter links, in its prose, the API page of the ``rsbook.papers`` module behind it (one it
    imports: its settings and runs); a chapter that links none of the paper modules it calls fails."""
    for src in chapters(REPO):
        text = src.read_text()
        imported = set(re.findall(r"from rsbook\.papers import (\w+)", text)) | set(re.findall(r"from rsbook\.papers\.(\w+) import", text))
        linked = {(m.group(3) or m.group(2)) for m in ROLE.finditer(text)}
        own = {m for m in imported if f"rsbook.papers.{m}" in linked}
        assert own, f"{src.name} links none of the paper modules it imports ({sorted(imported)})"
