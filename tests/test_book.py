"""The book pipeline: parameters are checked, chapters run through papermill, the book builds elsewhere."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rsbook import cli
from rsbook.book.claims import Check, Claims, exact, greater, mean, median, numeric_verdict, proportion, qualitative_verdict
from rsbook.book.pipeline import UnknownParameterError, build_book, chapters, coerce_parameters, read_parameters, run_notebook

REPO = Path(__file__).resolve().parents[1]

_NB_HEAD = ("---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\n"
            "kernelspec:\n  display_name: Python 3\n  language: python\n  name: python3\n---\n\n")


def _fake_book(tmp_path, monkeypatch, body: str) -> None:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (tmp_path / "notebooks" / "nb.md").write_text(_NB_HEAD + body)
    monkeypatch.setenv("RSBOOK_ROOT", str(tmp_path))


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


def test_cli_refuses_unknown_parameter_bad_profile_and_bad_device(capsys, tmp_path):
    name = chapters(REPO)[0].stem
    assert cli.main(["run", name, "-p", "sigmaa", "0.5", "-o", str(tmp_path / "x.ipynb")]) == 2
    assert "no parameter 'sigmaa'" in capsys.readouterr().err
    assert cli.main(["run", name, "-p", "profile", "fast", "-o", str(tmp_path / "x.ipynb")]) == 2
    assert "profile must be one of" in capsys.readouterr().err
    assert cli.main(["run", "no_such_chapter"]) == 2
    assert cli.main(["run", name, "-p", "device", "gpu", "-o", str(tmp_path / "x.ipynb")]) == 2
    assert "'gpu' is not a device name" in capsys.readouterr().err
    assert not (tmp_path / "x.ipynb").exists()


def test_bad_device_names_are_explained():
    from rsbook.infra.distributed import resolve_device

    with pytest.raises(ValueError, match="'gpu' is not a device name; use 'auto', 'cpu', 'cuda'"):
        resolve_device("gpu")
    assert str(resolve_device("auto", "dry_run")) == "cpu"


def test_one_parameters_cell_shows_the_values_used_and_claims_are_written(tmp_path, monkeypatch):
    _fake_book(tmp_path, monkeypatch,
               "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"  # which profile\nseed = 0\n```\n\n"
               "```{code-cell} ipython3\nfrom rsbook.book.claims import Claims\nc = Claims('nb', profile)\n"
               "from rsbook.book.claims import proportion\nc.numeric('x', 0.5, proportion(52, 100))\nc.show()\n```\n")
    result = run_notebook("nb", tmp_path / "out" / "nb.ipynb", {"profile": "smoke"})
    assert result.status == "ok", result.error
    nb = json.loads((tmp_path / "out" / "nb.ipynb").read_text())
    params = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "profile = 'smoke'  # set for this run (default: \"cpu\")" in "".join(params[0]["source"])
    assert "seed = 0" in "".join(params[0]["source"])
    assert all("remove-cell" in c["metadata"]["tags"] for c in injected)
    claims = json.loads((tmp_path / "out" / "nb.claims.json").read_text())
    assert claims["profile"] == "smoke" and claims["claims"][0]["verdict"] == "reproduced"


def test_numbers_are_judged_by_their_confidence_interval_widened_by_the_margin():
    # Clopper-Pearson by hand: the 2.5 % and 97.5 % Beta quantiles
    from scipy.stats import beta

    e = proportion(40, 100)
    assert e.low == pytest.approx(beta.ppf(0.025, 40, 61)) and e.high == pytest.approx(beta.ppf(0.975, 41, 60))
    assert [numeric_verdict(p, e, 0.05) for p in (0.40, e.low - 0.049, e.high + 0.051, 0.75)] == [
        "reproduced", "reproduced", "not reproduced", "not reproduced"]
    assert numeric_verdict(0.5, proportion(400, 1000), 0.05) == "not reproduced"  # more images, a narrower interval
    assert numeric_verdict(0.5, median([0.2, 0.9]), 0.05) == "inconclusive"  # two values bound no median: it could not fail
    assert numeric_verdict(5.0, median([0.2, 0.9]), 0.05) == "inconclusive" and numeric_verdict(0.1, median([0.2] * 9), 0.05) == "not reproduced"
    c = Claims("ch", "cpu")
    row = c.numeric("acc at r = 1.5", 0.09, proportion(0, 100), comparable=False, why="above our cap")
    assert row.verdict == "not comparable" and row.reason == "above our cap"
    assert c.numeric("acc", 0.45, proportion(33, 100), margin=0.0).verdict == "not reproduced"
    assert json.loads(c.to_json())["claims"][1]["margin"] == 0.0
    with pytest.raises(TypeError, match="must be an Estimate"):
        c.numeric("acc", 0.43, 0.33)


def test_the_median_interval_covers_the_population_median_at_its_level():
    rng = np.random.default_rng(1)
    hits = [(lambda e: e.low <= 0.0 <= e.high)(median(rng.standard_normal(41))) for _ in range(2000)]
    assert 0.94 <= np.mean(hits) <= 0.99  # distribution-free: at least 95 % (discrete, so a little more)
    e = median([0.1, 0.2, 0.3, np.inf, np.inf])  # an attack that found nothing counts as a large distance
    assert e.value == 0.3 and e.high == np.inf
    m = mean(rng.normal(1.0, 1.0, 400))
    assert m.low < 1.0 < m.high and m.high - m.low == pytest.approx(2 * 1.966 / 20, rel=0.05)
    assert exact(3.0).low == exact(3.0).high == 3.0


def test_comparisons_hold_fail_or_stay_undecided():
    rng = np.random.default_rng(2)
    base = rng.exponential(1.0, 80)
    assert greater(base + 0.5, base + rng.normal(0, 0.1, 80)).outcome is True
    assert greater(base, base + 0.5).outcome is False
    assert greater(base + rng.normal(0, 0.01, 80), base + rng.normal(0, 0.01, 80)).outcome is None
    wins = np.r_[np.ones(12), np.zeros(80)]  # 12 discordant images, all in a's favour: sign test p = 2^-12
    check = greater(wins, np.zeros(92))
    assert check.outcome is True and "p = 0.000244" in check.test
    assert greater(np.r_[np.ones(3), np.zeros(5)], np.r_[np.zeros(3), np.ones(5)]).outcome is None  # 3 vs 5: undecided
    assert qualitative_verdict([True, True]) == "reproduced" and qualitative_verdict([True, Check(False, "")]) == "partly"
    assert qualitative_verdict(False) == "not reproduced" and qualitative_verdict([Check(None, "")]) == "inconclusive"
    assert qualitative_verdict([Check(None, ""), False]) == "not reproduced"
    c = Claims("ch", "cpu")
    row = c.qualitative("a > b", "a > b", "a > b", [greater(base + 0.5, base)], test="paired")
    assert row.verdict == "reproduced" and row.test.startswith("paired; a > b: one-sided p")
    assert c.not_reproduced_here("Table 3", "needs ImageNet").verdict == "not comparable"
    assert c.counts()["reproduced"] == 1 and c.counts()["not comparable"] == 1


@pytest.mark.slow
def test_a_failing_notebook_is_reported_with_its_traceback(tmp_path, monkeypatch):
    _fake_book(tmp_path, monkeypatch, "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n\n"
                                      "```{code-cell} ipython3\nraise RuntimeError('deliberate failure')\n```\n")
    result = run_notebook("nb", tmp_path / "out.ipynb", {"profile": "smoke"})
    assert result.status == "failed" and "deliberate failure" in result.error
    assert "deliberate failure" in (tmp_path / "out.ipynb").read_text()  # the traceback is kept


def _published_state():
    """What a smoke build must not touch: the published book's pages and HTML."""
    paths = [REPO / "_build" / "html" / "index.html", *sorted((REPO / "book" / "generated").glob("*"))]
    return {str(p): p.stat().st_mtime_ns for p in paths if p.exists()}


@pytest.mark.slow
def test_book_builds_with_every_chapter_at_smoke_profile_outside_the_checkout(tmp_path, monkeypatch):
    """Every chapter runs at profile=smoke through the same papermill path as the book, and the HTML builds,
    in a staged copy: the published book in the checkout is left as it was. (Without the API reference, most
    of the HTML build's time: the cpu build in CI renders it, and the browser test checks its links.)"""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as a headless CI might set it
    monkeypatch.setenv("RSBOOK_DATA", str(tmp_path / "no-data"))  # smoke needs no dataset
    before = _published_state()
    assert build_book("smoke", out_dir=tmp_path / "book", jobs=2, api_reference=False) == 0  # two at a time, 1 torch thread each
    assert _published_state() == before
    src = tmp_path / "book" / "src"
    status = json.loads((src / "book" / "generated" / "status.json").read_text())
    assert {s["chapter"] for s in status} == {c.stem for c in chapters(REPO)}
    assert all(s["status"] == "ok" and s["profile"] == "smoke" for s in status)
    for c in chapters(REPO):  # figures rendered inline, whatever MPLBACKEND the caller had
        nb = json.loads((src / "book" / "generated" / f"{c.stem}.ipynb").read_text())
        images = [o for cell in nb["cells"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"{c.stem} rendered no figure"
    html = src / "_build" / "html"
    for c in chapters(REPO):
        page = (html / "book" / "generated" / f"{c.stem}.html").read_text()
        assert "Traceback" not in page
    assert "Build status" in (html / "book" / "generated" / "status.html").read_text()
    assert "leaves the API reference out" in (html / "book" / "api.html").read_text() and not (html / "book" / "api").exists()


@pytest.fixture(scope="session")
def dry_run_stores(tmp_path_factory) -> Path:
    """One folder of temporary stores for every chapter's dry run in this pytest session (all
    pytest-xdist workers): a chapter that loads other chapters' models (the leaderboard) reuses
    theirs, as in a staged book build; the store's lock makes each computed once."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "dry-run-stores"
    folder.mkdir(exist_ok=True)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("chapter", [c.stem for c in chapters(REPO)])
def test_every_chapter_runs_its_paper_code_paths_as_a_dry_run(chapter, tmp_path, monkeypatch, dry_run_stores):
    """The ``paper`` profile's architectures and code paths, tiny, on CPU: a wrong shape or a missing key fails here."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("RSBOOK_DATA", str(tmp_path / "no-data"))  # the dry run needs no dataset either
    result = run_notebook(chapter, tmp_path / f"{chapter}.ipynb", {"profile": "dry_run"}, tmp_dir=dry_run_stores)
    assert result.status == "ok", result.error
    assert result.profile == "dry_run"


def test_every_chapter_is_in_the_table_of_contents():
    toc = (REPO / "_toc.yml").read_text()
    for src in chapters(REPO):
        assert f"book/generated/{src.stem}\n" in toc, f"{src.name} is not in _toc.yml"


def _printed(nb_path: Path, tag: str) -> list[str]:
    """The values the executed notebook printed as ``<tag> value`` lines."""
    nb = json.loads(nb_path.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith(f"{tag} ")]


_TEMPORARY_NOTEBOOK = ("```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\nfail = False\n```\n\n"
                       "```{code-cell} ipython3\nimport tempfile\nfrom rsbook.book.profiles import chapter_store\n"
                       "store = chapter_store('x', profile)\n(store.root / 'result.txt').write_text('x')\n"
                       "print('STORE', store.root)\nprint('TMP', tempfile.mkdtemp(prefix='elsewhere-'))\n"
                       "if fail:\n    raise RuntimeError('deliberate failure')\n```\n")


def test_a_smoke_run_leaves_no_temporary_folder_behind_even_when_it_fails(tmp_path, monkeypatch):
    _fake_book(tmp_path, monkeypatch, _TEMPORARY_NOTEBOOK)
    for fail in (False, True):
        out = tmp_path / f"fail-{fail}.ipynb"
        result = run_notebook("nb", out, {"profile": "smoke", "fail": fail})
        assert result.status == ("failed" if fail else "ok"), result.error
        (store,), (tmp,) = _printed(out, "STORE"), _printed(out, "TMP")
        assert Path(store).name == "rsbook-smoke-x" and not Path(store).exists(), store  # the store was made, and is gone
        assert not Path(tmp).exists(), tmp  # so is any other temporary folder of the kernel
    assert "deliberate failure" in result.error


def test_a_run_stopped_by_sigterm_exits_143_and_leaves_no_temporary_folder_behind(tmp_path):
    """``rsbook run`` stopped mid-cell (a job scheduler's SIGTERM) unwinds: the kernel stops and the run's folder goes."""
    import signal
    import subprocess
    import sys
    import time

    nb = tmp_path / "sleepy.md"
    nb.write_text(_NB_HEAD + "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n\n"
                  "```{code-cell} ipython3\nimport time\nprint('STARTED', flush=True)\ntime.sleep(300)\n```\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "rsbook", "run", str(nb), "-o", str(tmp_path / "out.ipynb"),
                             "-p", "profile", "smoke"], cwd=REPO, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 120
        while not list(tmp.glob("rsbook-run-*/tmp")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list(tmp.glob("rsbook-run-*")), "the run never started its kernel"
        time.sleep(2)  # the kernel is in the sleeping cell (or starting it)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert not list(tmp.glob("rsbook-run-*")), list(tmp.iterdir())


@pytest.mark.slow
def test_a_smoke_run_under_torchrun_removes_rank_zeros_stores_after_every_rank(tmp_path):
    """Every rank uses rank 0's temporary store; it is removed once both ranks are done, and nothing is left."""
    import subprocess
    import sys

    from rsbook.infra.distributed import fresh_launch_env

    book = tmp_path / "book"
    book.mkdir()
    (book / "notebooks").mkdir()
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    (book / "notebooks" / "nb.md").write_text(_NB_HEAD + _TEMPORARY_NOTEBOOK)
    env = {**fresh_launch_env(), "RSBOOK_ROOT": str(book)}
    out = tmp_path / "runs" / "nb.ipynb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "rsbook", "run", "nb",
           "-p", "profile", "smoke", "-o", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    stores = _printed(out, "STORE") + _printed(out.with_name("nb.rank1.ipynb"), "STORE")
    assert len(stores) == 2 and stores[0] == stores[1], stores  # rank 0's store, on both ranks
    assert Path(stores[0]).is_relative_to(tmp_path / "runs" / ".tmp") and not Path(stores[0]).exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["nb.ipynb", "nb.rank1.ipynb"]


def test_run_help_lists_the_chapters_and_how_to_see_their_parameters(capsys, monkeypatch):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    shown = capsys.readouterr().out
    assert all(f"  {c.stem}\n" in shown for c in chapters(REPO)) and "rsbook run CHAPTER --list-parameters" in shown
    import rsbook.book.pipeline as pipeline

    def nowhere():
        raise FileNotFoundError("no checkout")

    monkeypatch.setattr(pipeline, "repo_root", nowhere)
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "set RSBOOK_ROOT=/path/to/checkout" in capsys.readouterr().out


def test_list_parameters_prints_every_parameter_with_its_default_and_comment(capsys):
    src = chapters(REPO)[0]
    assert cli.main(["run", src.stem, "--list-parameters"]) == 0
    shown = capsys.readouterr().out.splitlines()
    line = next(line for line in src.read_text().splitlines() if line.startswith("profile = "))
    comment = line.split("#", 1)[1].strip()
    assert any(s.startswith("profile = 'cpu'") and s.endswith(f"# {comment}") for s in shown), shown
    for name, default in read_parameters(src).items():
        assert any(s.startswith(f"{name} = {default!r}") for s in shown), name


def test_the_status_page_shows_a_failure_message_whole_below_a_well_formed_table():
    import re

    from rsbook.book.pipeline import RunResult, _status_page

    error = "ValueError: a | pipe, `code`, a ``` fence and a\nsecond line " + "x" * 500 + " THE END"
    page = _status_page([RunResult("00_a", "smoke", "ok", 1.0, "cpu", "a.ipynb", "", "t"),
                         RunResult("03_b", "smoke", "failed", 2.0, "cpu | x", "b.ipynb", error, "t")], "smoke")
    assert error in page  # whole, in a fenced block that its own backticks cannot close
    assert f"\n````text\n{error}\n````\n" in page
    rows = [line for line in page.splitlines() if line.startswith("|")]
    assert len(rows) == 4 and all(len(re.findall(r"(?<!\\)\|", r)) == 7 for r in rows), rows
    assert "FAILED" in rows[3] and "#failed-03-b" in rows[3] and "(failed-03-b)=" in page


def test_setup_page_checks_its_parameters_and_picks_the_device(monkeypatch):
    from rsbook.book.profiles import setup_page

    monkeypatch.delenv("RSBOOK_DATA", raising=False)
    assert str(setup_page("dry_run", "auto")) == "cpu"
    with pytest.raises(ValueError, match="profile must be one of"):
        setup_page("fast")
    with pytest.raises(ValueError, match="threads must be a non-negative integer"):
        setup_page("smoke", threads=-2)
    with pytest.raises(FileNotFoundError, match="data_root='/no/such/folder' is not a folder"):
        setup_page("cpu", data_root="/no/such/folder")


def test_tables_escape_text_and_keep_every_columns_format():
    # a later Styler.format() resets the columns it is not given: a claim's "<=" must still be escaped
    import pandas as pd

    from rsbook.book.tables import styled

    df = pd.DataFrame({"claim": ["x <= 0.5 & y < 1"], "value": [0.12345], "count": [3]})
    for formats in ("{:.2f}", {"value": "{:.2f}"}):
        html = styled(df, formats, index=False).to_html()
        assert "x &lt;= 0.5 &amp; y &lt; 1" in html and ">0.12<" in html and "x <= 0.5" not in html


def test_a_median_of_no_values_is_inconclusive_not_an_error():
    # a dry run's model may classify none of its two test images correctly
    from rsbook.book.claims import Claims, median

    c = Claims("x", "dry_run")
    row = c.numeric("median distance", 0.5, median([]), margin=0.05, fmt="{:.3f}")
    assert row.verdict == "inconclusive" and "in ours [-inf, inf]" in row.test
    with pytest.raises(ValueError, match="NaN"):
        median([0.1, float("nan")])


def test_the_claims_check_finds_every_changed_number_and_verdict_but_not_a_timing():
    import copy
    import json

    from rsbook.book.claims import TIMED, diff_claims

    ref = json.loads((REPO / "book" / "claims" / "03_heat_smoothing.claims.json").read_text())
    assert diff_claims(ref, copy.deepcopy(ref)) == []
    changed = copy.deepcopy(ref)
    changed["claims"][0]["verdict"] = "reproduced" if ref["claims"][0]["verdict"] != "reproduced" else "partly"
    assert len(diff_claims(ref, changed)) == 1  # a verdict
    changed = copy.deepcopy(ref)
    numeric = next(r for r in changed["claims"] if r["kind"] == "numeric" and TIMED not in r["test"])
    numeric["ours_value"] += 0.001
    assert any("ours_value" in d for d in diff_claims(ref, changed))  # a number
    changed = copy.deepcopy(ref)
    timed = next(r for r in changed["claims"] if TIMED in r["test"])
    timed["ours_value"], timed["ours"] = 1e6, "1000000.0"
    assert diff_claims(ref, changed) == []  # a timing differs from build to build
    timed["verdict"] = "reproduced"
    assert diff_claims(ref, changed) != []  # ... but not its verdict
    del changed["claims"][0]
    assert any("no longer shown" in d for d in diff_claims(ref, changed))


def test_every_chapter_has_reference_claims():
    names = {p.name for p in (REPO / "book" / "claims").glob("*.claims.json")}
    assert names == {f"{c.stem}.claims.json" for c in chapters(REPO)}  # CI compares the cpu build with them (rsbook claims-diff)


def _claims_file(folder: Path, chapter: str, rows: list[tuple[str, str]]) -> None:
    """A claims file in the format of ``Claims.to_json``, written by hand: one row per ``(claim, verdict)``."""
    claims = [{"claim": claim, "paper": "0.50", "ours": "0.48", "profile": "smoke", "verdict": verdict, "reason": f"why {i}",
               "test": f"test {i}", "kind": "qualitative", "paper_value": None, "ours_value": None, "ours_low": None,
               "ours_high": None, "margin": None} for i, (claim, verdict) in enumerate(rows)]
    (folder / f"{chapter}.claims.json").write_text(json.dumps({"chapter": chapter, "profile": "smoke", "level": 0.95, "rule": "",
                                                                "claims": claims}))


def test_the_scorecard_counts_every_chapters_verdicts_and_lists_a_missing_chapter(tmp_path):
    import re

    from rsbook.book.scorecard import counts, load_claims, missing_chapters, scorecard_page

    _claims_file(tmp_path, "00_a", [("a1", "reproduced"), ("a2", "reproduced"), ("a3", "partly"), ("E[x | y] = x", "not reproduced")])
    _claims_file(tmp_path, "01_b", [("b1", "not comparable"), ("b2", "inconclusive"), ("b3", "reproduced")])
    order = ["01_b", "02_gone", "00_a"]  # the book's order, not the files' names
    df = load_claims(tmp_path, order)
    assert list(df["chapter"]) == ["01_b"] * 3 + ["00_a"] * 4 and df["reason"].iloc[0] == "why 0; test 0"
    table = counts(df)
    assert list(table.index) == ["01_b", "00_a", "all"]
    assert list(table.columns) == ["reproduced", "partly", "not reproduced", "not comparable", "inconclusive", "claims"]
    assert table.loc["00_a"].tolist() == [2, 1, 1, 0, 0, 4]
    assert table.loc["01_b"].tolist() == [1, 0, 0, 1, 1, 3]
    assert table.loc["all"].tolist() == [3, 1, 1, 1, 1, 7]
    assert missing_chapters(tmp_path, order) == ["02_gone"]
    page = scorecard_page(tmp_path, "smoke", order, failed=["02_gone"])
    lines = page.splitlines()
    assert lines[0] == "# Scorecard" and [h for h in lines if h.startswith("#")] == ["# Scorecard", "## Verdicts", "## Every claim"]
    assert "| 00_a | 2 | 1 | 1 | 0 | 0 | 4 |" in lines and "| **all** | **3** | **1** | **1** | **1** | **1** | **7** |" in lines
    assert "| 02_gone | – | – | – | – | – | missing |" in lines and "**Missing**: `02_gone`" in page
    assert any(r.startswith("| 02_gone | (no claims file") and "| missing |" in r for r in lines)
    assert "| 00_a | E[x \\| y] = x | 0.50 | 0.48 | smoke | not reproduced | why 3; test 3 |" in lines
    rows = [r for r in lines if r.startswith("|")]
    assert all(len(re.findall(r"(?<!\\)\|", r)) == 8 for r in rows), rows  # both tables have 7 columns, every row well formed
    assert len(rows) == (2 + 3 + 1) + (2 + 7 + 1)  # header, rule, 3 chapters, all; header, rule, 7 claims, 1 missing
    assert [r.split(" | ")[0] for r in rows[8:]] == ["| 01_b"] * 3 + ["| 02_gone"] + ["| 00_a"] * 4  # book order


def test_the_committed_reference_claims_load_with_known_verdicts(capsys):
    from rsbook.book.claims import VERDICTS
    from rsbook.book.scorecard import counts, load_claims

    df = load_claims(REPO / "book" / "claims")
    files = (REPO / "book" / "claims").glob("*.claims.json")
    per_file = {p.name[:-len(".claims.json")]: len(json.loads(p.read_text())["claims"]) for p in files}
    assert list(df["chapter"].unique()) == sorted(per_file)  # every file, by name (test_every_chapter_has_reference_claims: every chapter)
    assert len(df) > 0 and set(df["verdict"]) <= set(VERDICTS) and (df["claim"] != "").all()
    table = counts(df)
    assert table["claims"].drop("all").to_dict() == per_file and table.loc["all", "claims"] == sum(per_file.values())
    assert cli.main(["scorecard", str(REPO / "book" / "claims")]) == 0
    shown = capsys.readouterr().out
    assert all(c in shown for c in per_file) and "not comparable" in shown
    assert cli.main(["scorecard", str(REPO / "no_such_folder")]) == 2


def test_chapters_run_concurrently_in_toc_order_with_jobs(tmp_path, monkeypatch):
    """Three chapters that each sleep 2 s, two at a time: they start in the toc's order (not the names'), the
    first two overlap, the results and pages list them in the toc's order, and the status page names the versions."""
    _fake_book(tmp_path, monkeypatch, "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n")
    (tmp_path / "notebooks" / "nb.md").unlink()
    times = tmp_path / "times"
    times.mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "notebooks" / f"{name}.md").write_text(
            _NB_HEAD + "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n\n"
            f"```{{code-cell}} ipython3\nimport os, pathlib, time\nt0 = time.time()\n"
            f"from rsbook.book.profiles import chapter_store\nshared = chapter_store('shared', profile).root\n"
            f"(shared / {name!r}).write_text('x')\ntime.sleep(2)\nseen = ','.join(sorted(p.name for p in shared.iterdir()))\n"
            f"pathlib.Path({str(times / name)!r}).write_text(\n"
            f"    f'{{t0}} {{time.time()}} {{os.environ[\"RSBOOK_CLAIMS\"]}} {{os.getcwd()}} {{seen}} {{os.environ.get(\"OMP_NUM_THREADS\")}} {{shared}}')\n```\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: book/generated/c\n"
                                       "- file: book/generated/a.ipynb\n- file: book/generated/b\n")
    (tmp_path / "_config.yml").write_text("title: fake\n")
    (tmp_path / "book").mkdir()
    with pytest.raises(ValueError, match="jobs must be a non-negative integer"):
        build_book("smoke", out_dir=tmp_path / "build", build_html=False, jobs=-1)
    monkeypatch.chdir(times)
    assert build_book("smoke", out_dir=tmp_path / "build", build_html=False, jobs=2) == 0
    assert Path.cwd() == times and "RSBOOK_CLAIMS" not in os.environ  # this process's folder and environment are left alone
    gen = tmp_path / "build" / "src" / "book" / "generated"
    status = json.loads((gen / "status.json").read_text())
    assert [s["chapter"] for s in status] == ["c", "a", "b"] and all(s["status"] == "ok" for s in status)
    written = {n: (times / n).read_text().split() for n in "abc"}
    assert all(w[2:4] == [str(gen / f"{n}.claims.json"), str(tmp_path)] for n, w in written.items()), written  # each kernel its own
    assert written["b"][4] == "a,b,c", written  # one store folder for the build: b sees what c and a stored
    cores = len(os.sched_getaffinity(0))
    assert {w[5] for w in written.values()} == {os.environ.get("OMP_NUM_THREADS") or str(max(1, cores // 2))}  # a share of the cores each
    assert len({w[6] for w in written.values()}) == 1 and not Path(written["b"][6]).exists()  # shared, and removed at the end
    t = {n: (float(w[0]), float(w[1])) for n, w in written.items()}
    assert max(t["c"][0], t["a"][0]) < min(t["c"][1], t["a"][1]), t  # c and a ran at the same time
    assert t["b"][0] >= min(t["c"][1], t["a"][1]) - 0.5, t  # b waited for a free slot
    page = (gen / "status.md").read_text()
    assert page.index("| c |") < page.index("| a |") < page.index("| b |")
    assert "up to 2 chapters at a time" in page and "- torch: `" in page and "- git commit: `" in page
    scorecard = (gen / "scorecard.md").read_text()
    assert scorecard.index("| c |") < scorecard.index("| a |") < scorecard.index("| b |") and "**Missing**: `c`, `a`, `b`" in scorecard


def test_a_kernels_threads_must_be_a_positive_integer(tmp_path, monkeypatch):
    _fake_book(tmp_path, monkeypatch, "```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            run_notebook("nb", tmp_path / "x.ipynb", {"profile": "smoke"}, threads=bad)


def test_a_staged_build_can_leave_the_api_reference_out_but_the_published_book_cannot(tmp_path, monkeypatch, capsys):
    import yaml

    from rsbook.book.pipeline import drop_api_reference, stage_sources

    src = stage_sources(REPO, tmp_path / "src")
    assert "autosummary::" in (src / "book" / "api.md").read_text()
    drop_api_reference(src)
    assert "autosummary" not in (src / "book" / "api.md").read_text()  # the page stays, so links to it resolve
    config = yaml.safe_load((src / "_config.yml").read_text())
    assert config == {**yaml.safe_load((REPO / "_config.yml").read_text()), "sphinx": config["sphinx"]}  # nothing else changed
    sphinx = config["sphinx"]["config"]
    assert sphinx["autosummary_generate"] is False and ["py:.*", ".*"] in sphinx["nitpick_ignore_regex"]
    assert config["sphinx"]["extra_extensions"] == yaml.safe_load((REPO / "_config.yml").read_text())["sphinx"]["extra_extensions"]
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match="always has its API reference"):
        build_book("cpu", build_html=False, api_reference=False)
    assert cli.main(["book", "--no-api"]) == 2 and "always has its API reference" in capsys.readouterr().err
