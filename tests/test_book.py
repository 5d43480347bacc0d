"""The book pipeline: parameters are checked, chapters run through papermill, the book builds."""

import json
import os
from pathlib import Path

import pytest

from rsbook import cli
from rsbook.book import UnknownParameterError, build_book, chapters, coerce_parameters, read_parameters, run_notebook

REPO = Path(__file__).resolve().parents[1]


def test_every_chapter_has_plain_literal_parameters_with_profile():
    assert chapters(REPO), "no chapters found"
    for src in chapters(REPO):
        params = read_parameters(src)
        assert params["profile"] == "cpu", src  # the published profile is the default
        assert {"seed", "device", "data_root"} <= set(params), src


def test_unknown_or_mistyped_parameters_are_refused():
    defaults = {"profile": "cpu", "seed": 0, "n": 0, "lr": 0.1, "recompute": False}
    assert coerce_parameters({"seed": "3", "lr": "1", "recompute": "True"}, defaults) == {"seed": 3, "lr": 1.0, "recompute": True}
    with pytest.raises(UnknownParameterError, match="no parameter 'sigma'"):
        coerce_parameters({"sigma": "0.5"}, defaults)
    with pytest.raises(ValueError, match="wrong type"):
        coerce_parameters({"n": "0.5"}, defaults)
    with pytest.raises(ValueError, match="wrong type"):
        coerce_parameters({"recompute": "1"}, defaults)


def test_cli_refuses_unknown_parameter_and_bad_profile(capsys, tmp_path):
    name = chapters(REPO)[0].stem
    assert cli.main(["run", name, "-p", "sigmaa", "0.5", "-o", str(tmp_path / "x.ipynb")]) == 2
    assert "no parameter 'sigmaa'" in capsys.readouterr().err
    assert cli.main(["run", name, "-p", "profile", "fast", "-o", str(tmp_path / "x.ipynb")]) == 2
    assert "profile must be one of" in capsys.readouterr().err
    assert cli.main(["run", "no_such_chapter"]) == 2
    assert not (tmp_path / "x.ipynb").exists()


@pytest.mark.slow
def test_a_failing_notebook_is_reported_with_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "notebooks" / "bad.md").write_text(
        "---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
        "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n"
        "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n\n"
        "```{code-cell} ipython3\nraise RuntimeError('deliberate failure')\n```\n"
    )
    monkeypatch.setenv("RSBOOK_ROOT", str(tmp_path))
    result = run_notebook("bad", tmp_path / "out.ipynb", {"profile": "smoke"})
    assert result.status == "failed" and "deliberate failure" in result.error
    assert "deliberate failure" in (tmp_path / "out.ipynb").read_text()  # the traceback is kept


@pytest.mark.slow
def test_book_builds_with_every_chapter_at_smoke_profile(monkeypatch, data_root):
    """Every chapter runs at profile=smoke through the same papermill path as the book, and the HTML builds."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RSBOOK_DATA", str(data_root))  # smoke trains on a slice of the real training sets
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as a headless CI might set it
    assert build_book("smoke") == 0
    status = json.loads((REPO / "book" / "generated" / "status.json").read_text())
    assert {s["chapter"] for s in status} == {c.stem for c in chapters(REPO)}
    assert all(s["status"] == "ok" and s["profile"] == "smoke" for s in status)
    for c in chapters(REPO):  # figures rendered inline, whatever MPLBACKEND the caller had
        nb = json.loads((REPO / "book" / "generated" / f"{c.stem}.ipynb").read_text())
        images = [o for cell in nb["cells"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{c.stem} rendered no figure"
    html = REPO / "_build" / "html"
    for c in chapters(REPO):
        page = (html / "book" / "generated" / f"{c.stem}.html").read_text()
        assert "Traceback" not in page
    assert "Build status" in (html / "book" / "generated" / "status.html").read_text()


def test_every_chapter_is_in_the_table_of_contents():
    toc = (REPO / "_toc.yml").read_text()
    for src in chapters(REPO):
        assert f"book/generated/{src.stem}\n" in toc, f"{src.name} is not in _toc.yml"
