"""The built book in a real browser (Debian's headless chromium): figures, links, errors, math.

``test_built_book_in_browser`` (slow) checks the book that ``rsbook book`` built: the folder in
``RSBOOK_HTML``, else ``_build/html`` of this checkout. With ``RSBOOK_BROWSER_REQUIRED=1`` (CI)
a missing book or browser fails the test; otherwise it skips, saying what is missing. The checks
themselves are in :mod:`rsbook.book.browser`; the other tests here prove each of them can fail,
on a tiny hand-written book with one deliberate fault of each kind, and pass on a clean one.
"""

from __future__ import annotations

import base64
import importlib.metadata
import os
import shutil
import time
from pathlib import Path

import pytest

from rsbook.book import browser as B

REPO = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("RSBOOK_BROWSER_REQUIRED") == "1"

# a valid 2x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAIAAAB7QOjdAAAAEElEQVR4nGP4z8DAwMDAAAAHAAEBAQBhXQAAAABJRU5ErkJggg=="
)


def _unavailable(message: str):
    if REQUIRED:
        pytest.fail(message + " (RSBOOK_BROWSER_REQUIRED=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """(chromium, chromedriver); installs them with apt-get when missing, if root with apt."""
    try:
        return B.find_browser()
    except B.BrowserMissing:
        note = B.install_browser(timeout=900)  # a note on why it could not, or what it did
    try:
        return B.find_browser()
    except B.BrowserMissing as exc:
        _unavailable(f"no browser for the browser test: {exc}" + (f" (tried apt-get: {note})" if note else ""))


# ------------------------------------------------------------------------------------------
# Fast: the pure parts of the checker.


def test_pages_are_every_html_file_but_sphinx_machinery(tmp_path):
    for rel in ["index.html", "book/a.html", "api.html", "generated/rsbook.core.html", "genindex.html",
                "search.html", "_static/x.html", "_sources/a.html", "_modules/rsbook/core.html", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<html></html>")
    assert [p.as_posix() for p in B.book_pages(tmp_path)] == ["api.html", "book/a.html", "generated/rsbook.core.html", "index.html"]


@pytest.mark.parametrize(
    "text, found",
    [
        ("the radius $x^2$ grows", ["$x^2$"]),
        ("a single $x$", ["$x$"]),
        ("display $$R = \\sigma$$ math", ["$$R = \\sigma$$"]),
        ("inline \\(\\sigma\\) math", ["\\(\\sigma\\)"]),
        ("display \\[ R \\] math", ["\\[ R \\]"]),
        ("split across tags: $ x $", []),  # pandoc: no space inside the delimiters
        ("price US$ 5, or $5 and $10", []),
        ("a lone $ sign", []),
        ("escaped \\$5 and \\$6", []),
        ("costs $5 each", []),
    ],
)
def test_unrendered_math_rule(text, found):
    assert B.unrendered_math(text) == found


def test_error_lines_flag_tracebacks_and_exceptions_not_warnings():
    tb = "---------\nValueError                 Traceback (most recent call last)\nCell In[3]\nValueError: sigma must be > 0"
    assert B.error_lines(tb, stream=True) == ["Traceback (most recent call last)", "ValueError: sigma must be > 0"]
    oom = "torch.cuda.OutOfMemoryError: CUDA out of memory"
    assert B.error_lines(oom, stream=True) == [oom]
    assert B.error_lines("/x.py:3: UserWarning: slow\n  warnings.warn(\n100%|#####| 10/10", stream=True) == []
    assert B.error_lines("ValueError: in an HTML table cell", stream=False) == []  # only stream/plain text outputs


def test_report_lists_every_problem_per_page():
    report = B.format_report({"b.html": ["link: x", "math: y"], "a.html": ["image: z"], "c.html": []}, root="html")
    assert report.splitlines() == ["3 problems on 2 of 3 pages of html:", "a.html", "  - image: z", "b.html", "  - link: x", "  - math: y"]
    assert B.format_report({"a.html": []}, root="html") == "no problems on 1 pages of html"


# ------------------------------------------------------------------------------------------
# Slow (chromium): each check fails on its fault, and a clean book passes.

_HEAD = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<script>window.MathJax = {{"options": {{"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}}}</script>
<script defer="defer" src="{up}_static/mathjax/tex-chtml.js"></script>{extra}</head>
<body><section class="tex2jax_ignore mathjax_ignore" id="top"><h1>{title}</h1>
"""

CLEAN = """
<p>Rendered math <span class="math notranslate nohighlight">\\(\\sigma^2\\)</span> and a display:</p>
<div class="math notranslate nohighlight">\\[R = \\frac{\\sigma}{2}\\]</div>
<p>Money is not math: US$ 5, $5 and $10, a lone $.</p>
<p>Code is not math: <code class="docutils literal">$x^2$ and \\(y\\)</code>.</p>
<pre>echo "$HOME" $PATH \\[z\\]</pre>
<div class="cell docutils container"><div class="cell_input docutils container"><div class="highlight"><pre>cost = "$x$"</pre></div></div>
<div class="cell_output docutils container">
<div class="output stream highlight-myst-ansi notranslate"><div class="highlight"><pre>certified 42 of 50 at $r$</pre></div></div>
<div class="output stderr highlight-myst-ansi notranslate"><div class="highlight"><pre>/x.py:3: UserWarning: sigma is large
  warnings.warn(
100%|##########| 10/10</pre></div></div>
<img alt="a figure" src="{up}_images/fig.png" />
</div></div>
<p><a href="other.html#there">a section</a>, <a href="#top">this page</a>, <a href="other.html">a page</a>,
<a href="{up}genindex.html">index</a>, <a href="https://example.com/missing#x">external</a>,
<a href="mailto:a@b.c">mail</a>, <a href="#">top</a>, <a href="{up}_sources/clean.ipynb">source</a>.</p>
<img src="data:image/png;base64,{png}" alt="inline" />
</section></body></html>
"""

FAULTY = """
<p>Not math: $x^2$ in a paragraph, and <em>\\(\\alpha\\)</em> here.</p>
<p>A TeX error: <span class="math notranslate nohighlight">\\(\\frac{1}\\)</span>.</p>
<img alt="missing" src="{up}_images/missing.png" />
<img alt="empty" src="{up}_images/empty.png" />
<p><a href="other.html#nope">a missing anchor</a>, <a href="gone.html">a missing page</a>,
<a href="#also-missing">a missing anchor here</a>.</p>
<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output stream highlight-myst-ansi notranslate"><div class="highlight"><pre>Traceback (most recent call last):
  File "x.py", line 1, in &lt;module&gt;
RuntimeError: the certifier broke</pre></div></div>
</div></div>
<div class="cell docutils container"><div class="cell_output docutils container">
<div class="output traceback highlight-ipythontb notranslate">
<div class="highlight"><pre>KeyError              Traceback (most recent call last)
KeyError: 'sigma'</pre></div></div>
</div></div>
</section></body></html>
"""


def _page(html: Path, rel: str, title: str, body: str, *, extra: str = ""):
    up = "../" * (len(Path(rel).parts) - 1)
    path = html / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    body = body.replace("{up}", up).replace("{png}", base64.b64encode(PNG).decode())
    path.write_text(_HEAD.format(title=title, up=up, extra=extra) + body)


@pytest.fixture
def tiny_book(tmp_path) -> Path:
    """A two-folder book like Jupyter Book's layout, with MathJax (sphinx-mathjax-offline's copy)."""
    html = tmp_path / "html"
    mathjax = Path(importlib.metadata.distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax"))
    (html / "_static").mkdir(parents=True)
    try:
        (html / "_static" / "mathjax").symlink_to(mathjax, target_is_directory=True)
    except OSError:
        shutil.copytree(mathjax, html / "_static" / "mathjax")
    (html / "_images").mkdir()
    (html / "_images" / "fig.png").write_bytes(PNG)
    (html / "_images" / "empty.png").write_bytes(b"")
    (html / "_sources").mkdir()
    (html / "_sources" / "clean.ipynb").write_text("{}")
    (html / "genindex.html").write_text("<html><body>index</body></html>")
    _page(html, "book/clean.html", "Clean", CLEAN)
    _page(html, "book/other.html", "Other", '<h2 id="there">There</h2><p><a href="clean.html#top">back</a></p></section></body></html>')
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/clean.html" />')
    return html


@pytest.mark.slow
def test_a_clean_tiny_book_passes(tiny_book, chromium):
    problems = B.check_book(tiny_book, browser=chromium)
    assert set(problems) == {"book/clean.html", "book/other.html", "index.html"}
    assert not any(problems.values()), B.format_report(problems, root=tiny_book)


@pytest.mark.slow
def test_every_fault_is_reported(tiny_book, chromium):
    _page(tiny_book, "book/faulty.html", "Faulty", FAULTY, extra='<link rel="stylesheet" href="../_static/missing.css" />')
    (tiny_book / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/nowhere.html" />')
    problems = B.check_book(tiny_book, browser=chromium)
    report = B.format_report(problems, root=tiny_book)
    assert not problems["book/clean.html"] and not problems["book/other.html"], report
    assert problems["index.html"] == ["link: 'book/nowhere.html': no file book/nowhere.html"], report
    found = problems["book/faulty.html"]
    expected = [
        "image: ../_images/missing.png: not loaded in the browser (naturalWidth 0), file missing",
        "image: ../_images/empty.png: not loaded in the browser (naturalWidth 0), file is empty (0 bytes)",
        "error: a cell's error output: KeyError Traceback (most recent call last) KeyError: 'sigma'",
        "error: in a cell output: RuntimeError: the certifier broke",
        "error: in a cell output: Traceback (most recent call last)",
        "link: 'other.html#nope': book/other.html has no element with id 'nope'",
        "link: 'gone.html': no file book/gone.html",
        "link: '#also-missing': book/faulty.html has no element with id 'also-missing'",
        "resource: /_static/missing.css answered HTTP 404",
    ]
    for line in expected:
        assert line in found, f"{line!r} not reported:\n{report}"
    math = [p for p in found if p.startswith("math:")]
    assert any("'$x^2$'" in p for p in math), report
    assert any("'\\\\(\\\\alpha\\\\)'" in p for p in math), report
    assert any(p.startswith("math: MathJax error:") for p in math), report
    assert len(found) == len(expected) + len(math) == len(expected) + 3, report


@pytest.mark.slow
def test_a_page_cut_short_is_reloaded_and_reported_only_when_it_stays_cut(tiny_book, chromium):
    """A page whose DOM lacks ids of its file (what a response cut short looks like): a load cut
    once is retried and passes; one cut on every load is one ``page`` problem, and the links into
    it are judged by its file's ids, not reported as broken links."""
    cut_once = (
        '<h2 id="kept">Kept</h2><h2 id="late">Late</h2>'
        "<script>if (!sessionStorage.getItem('cut')) { sessionStorage.setItem('cut', '1');"
        " document.getElementById('late').remove(); }</script></section></body></html>"
    )
    cut_always = '<h2 id="kept">Kept</h2><h2 id="late">Late</h2><script>document.getElementById("late").remove();</script></section></body></html>'
    _page(tiny_book, "book/once.html", "Once", cut_once)
    _page(tiny_book, "book/always.html", "Always", cut_always)
    _page(tiny_book, "book/into.html", "Into", '<p><a href="once.html#late">a</a> <a href="always.html#late">b</a></p></section></body></html>')
    problems = B.check_book(tiny_book, browser=chromium)
    report = B.format_report(problems, root=tiny_book)
    assert not problems["book/once.html"] and not problems["book/into.html"], report
    assert problems["book/always.html"] == [
        f"page: loaded incomplete {B.LOAD_ATTEMPTS} times: the browser's page lacks 1 of the file's 3 ids (first 'late')"
    ], report


# ------------------------------------------------------------------------------------------
# Slow: the book itself.


def _built_book() -> Path:
    html = Path(os.environ.get("RSBOOK_HTML") or REPO / "_build" / "html")
    if not html.is_dir() or not B.book_pages(html):
        _unavailable(f"no built book at {html}: run `rsbook book` first (or set RSBOOK_HTML to the built HTML folder)")
    return html


@pytest.mark.slow
def test_built_book_in_browser(chromium):
    html = _built_book()
    pages = B.book_pages(html)
    assert pages, f"no pages in {html}"
    t = time.perf_counter()
    problems = B.check_book(html, browser=chromium)
    seconds = time.perf_counter() - t
    print(f"[browser] {len(problems)} pages of {html} checked in chromium in {seconds:.1f} s")
    assert not any(problems.values()), B.format_report(problems, root=html)
