"""Check the built book in a real browser: Debian's headless chromium, driven by Selenium.

``check_book(html_dir)`` serves the folder on ``127.0.0.1`` (an ephemeral port, Python's
``http.server`` in a thread, so pages load as a reader's browser loads them, not from
``file://``), opens every page (:func:`book_pages`) in one headless chromium, waits for the page,
its images and MathJax, and returns the problems it found, per page (all of them, not the first)::

    python -m rsbook.book.browser _build/html     # prints the report; exit status 1 on a problem

What counts as a problem (one line each in the report):

``image``
    An ``<img>`` that did not load in the browser (not ``complete`` or ``naturalWidth == 0``),
    or whose file is missing from the build or is empty. ``data:`` images are checked in the
    browser only; images on another host are not checked (the network is closed in CI).
``link``
    An ``<a href>`` inside the book (same origin as the local server) whose target file is
    missing, or whose ``#fragment`` names no element (``id``, or ``<a name>``) on the target page.
    For pages of the check the target's ids are read from the live DOM after its scripts ran;
    for other HTML files (``genindex.html``, ``search.html``, ...) from the file. External links
    (another host), ``mailto:``, ``tel:``, ``javascript:`` and text fragments (``#:~:text=``)
    are not checked. Sphinx's ``genindex``/``search`` links are checked like any other: they
    must exist in the build. A page that is only a ``<meta http-equiv="refresh">`` redirect (the
    book's root ``index.html``) is not opened; its target must exist.
``resource``
    A request the page made (stylesheet, script, font, MathJax component, ...) that the local
    server answered with an HTTP error. ``/favicon.ico`` (requested by the browser on its own)
    is ignored, and so are the page's images (reported as ``image``).
``error``
    A cell output that shows an error: MyST-NB's rendering of an ``error`` output (the element
    ``.output.traceback``), the text ``Traceback (most recent call last)`` anywhere in a cell
    output (``.cell_output`` or ``.output``), a line ``SomeError: message`` /
    ``SomeException: message`` in a stream or plain-text output, or papermill's failure
    banner (the element ``#papermill-error-cell``, or the banner's link to it; a page that only
    quotes the banner's words, like this docstring's API page, is not flagged). **stderr alone is
    not an error**: MyST-NB renders it as ``.output.stderr`` and warnings or progress bars there
    pass, unless they contain one of the error texts above.
``math``
    Math that MathJax did not render, in the page's text after MathJax finished
    (``MathJax.startup.promise``): a ``\\(`` or ``\\[`` delimiter, or a ``$`` pair read the way
    pandoc reads inline TeX math -- an opening ``$`` followed by a non-space, a closing ``$``
    preceded by a non-space (not a backslash) and not followed by a digit (so ``$x^2$`` and
    ``$$E$$`` fail, while "US$ 5", "$5 and $10" and a lone ``$`` pass). Also a MathJax TeX
    error (``mjx-merror``), and a page that asks for MathJax whose MathJax never started.
    Text in ``<code>``, ``<pre>``, ``<kbd>``, ``<samp>``, highlighted blocks (``.highlight``,
    which holds every code cell's source and stream output), ``<script>``, ``<style>``,
    ``<textarea>`` and MathJax's own output (``mjx-container``) is not math and is not checked;
    hidden text (a collapsed toggle) is checked, because a reader who opens it sees it.
``page``
    The page itself did not load (HTTP error, time-out, a script error in the checker), or it
    loaded incomplete: its live DOM lacks ids that its file has (a response cut short). Such a
    load is retried (``LOAD_ATTEMPTS`` loads in all) before it is reported, and links into it are
    then judged by its file's ids, so one cut load is not reported as many broken links.
"""

from __future__ import annotations

import functools
import html.parser
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

__all__ = [
    "BrowserMissing",
    "CHROMIUM_FLAGS",
    "book_pages",
    "check_book",
    "error_lines",
    "find_browser",
    "format_report",
    "install_browser",
    "unrendered_math",
]

#: Top-level entries of the build that are not pages of the book (Sphinx's own machinery).
EXCLUDED = frozenset({"_static", "_sources", "_modules", "_images", "genindex.html", "search.html"})

#: Flags for chromium running as root in a closed network (no sandbox as root; no background
#: connections, which a closed network refuses many at a time and slows every page down).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1024",
)

#: How often a page that loaded incomplete (ids of its file missing from its DOM) is loaded.
LOAD_ATTEMPTS = 3

INSTALL_HINT = "install them with `apt-get install -y chromium chromium-driver` (as root; `bash .ci/setup` does it)"


class BrowserMissing(RuntimeError):
    """chromium, chromedriver or selenium is missing; the message says which and how to install it."""


# ----------------------------------------------------------------------------------------------
# The pure checks (no browser): what the browser collected is judged here.

# pandoc's inline-math rule: "$" then a non-space (not "$"), ..., a non-space that is not a
# backslash, "$", not followed by a digit. "$$...$$" (display math) is matched as well.
_DOLLAR_PAIR = re.compile(r"\$\$(?=\S).*?\$\$|(?<![\\$])\$(?![\s$])(?:[^$]*?[^\s$\\])?\$(?!\d)", re.S)
_TEX_DELIMS = re.compile(r"\\[(\[]")


def unrendered_math(text: str) -> list[str]:
    r"""The spans of ``text`` that look like TeX math a browser shows as source.

    >>> unrendered_math("the radius $x^2$ grows, and $$E = mc^2$$")
    ['$x^2$', '$$E = mc^2$$']
    >>> unrendered_math(r"with \(\sigma\) fixed and \[ R = \sigma \]")
    ['\\(\\sigma\\)', '\\[ R = \\sigma \\]']
    >>> unrendered_math("costs US$ 5, or $5 and $10; a lone $ is fine")
    []
    """
    found = [m.group(0) for m in _DOLLAR_PAIR.finditer(text)]
    for m in _TEX_DELIMS.finditer(text):
        close = text.find("\\" + {"(": ")", "[": "]"}[m.group(0)[1]], m.end(), m.end() + 200)
        found.append(text[m.start() : close + 2] if close >= 0 else text[m.start() : m.start() + 40])
    return found


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception)):\s+\S", re.M)
_TRACEBACK = "Traceback (most recent call last)"


def error_lines(text: str, *, stream: bool) -> list[str]:
    """The error texts in a cell output's text: a traceback header, and (``stream``: a stdout,
    stderr or plain-text output) a line ``SomeError: message``.

    >>> error_lines("Traceback (most recent call last):\\n  ...\\nValueError: bad", stream=True)
    ['Traceback (most recent call last)', 'ValueError: bad']
    >>> error_lines("UserWarning: sigma is large\\n 40%|####", stream=True)
    []
    """
    found = [_TRACEBACK] if _TRACEBACK in text else []
    if stream:
        found += [text[m.start(1) :].split("\n")[0].strip()[:120] for m in _ERROR_LINE.finditer(text)]
    return found


def book_pages(root: str | os.PathLike) -> list[Path]:
    """Every ``.html`` file of the build, relative to ``root``, except Sphinx's machinery:
    ``_static``, ``_sources``, ``_modules``, ``genindex.html``, ``search.html`` (API pages are pages).
    """
    root = Path(root)
    pages = [p.relative_to(root) for p in root.rglob("*.html")]
    return sorted(p for p in pages if p.parts[0] not in EXCLUDED)


class _Ids(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            m = re.search(r"url\s*=\s*['\"]?([^'\"]+)", a.get("content") or "", re.I)
            if m:
                self.refresh = m.group(1).strip()


@functools.lru_cache(maxsize=None)
def _parse_static(path: Path) -> _Ids:
    p = _Ids()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p


def _target_file(root: Path, path: str) -> Path | None:
    """The file of the build that a URL path (``/book/x.html``) names, or None outside the build."""
    rel = unquote(path).lstrip("/")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target


def format_report(problems: dict[str, list[str]], *, root: str | os.PathLike = "", pages: int | None = None) -> str:
    """A readable report: per page, one line per problem.

    >>> print(format_report({"a.html": ["image: x.png: file missing"]}, root="html", pages=3))
    1 problem on 1 of 3 pages of html:
    a.html
      - image: x.png: file missing
    """
    bad = {p: v for p, v in problems.items() if v}
    if not bad:
        return f"no problems on {pages if pages is not None else len(problems)} pages of {root}"
    n = sum(len(v) for v in bad.values())
    total = pages if pages is not None else len(problems)
    lines = [f"{n} problem{'s' * (n != 1)} on {len(bad)} of {total} page{'s' * (total != 1)} of {root}:"]
    for page in sorted(bad):
        lines.append(page)
        lines += [f"  - {p}" for p in bad[page]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The browser.


def find_browser() -> tuple[str, str]:
    """The paths of chromium and chromedriver (``RSBOOK_CHROMIUM``/``RSBOOK_CHROMEDRIVER`` override).

    Raises:
        BrowserMissing: naming what is missing and how to install it.
    """
    if "RSBOOK_CHROMIUM" in os.environ:
        chromium = shutil.which(os.environ["RSBOOK_CHROMIUM"])
    else:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which(os.environ.get("RSBOOK_CHROMEDRIVER") or "chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver (package chromium-driver)", driver)) if not path]
    if missing:
        raise BrowserMissing(f"{' and '.join(missing)} not found on PATH; {INSTALL_HINT}")
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserMissing("the Python package selenium is missing; install it with `pip install selenium` "
                             "(`bash .ci/setup` does it)") from None
    return chromium, driver


def install_browser(timeout: float = 900) -> str:
    """Install chromium and chromedriver with apt-get, if this runs as root on a machine with apt.

    Returns a note on what happened (empty when they were there already); never raises.
    """
    try:
        find_browser()
        return ""
    except BrowserMissing:
        pass
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    if os.geteuid() != 0:
        return "not running as root, so apt-get cannot install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]
    log = ""
    try:
        for attempt in (cmd, ["apt-get", "update", "-qq"], cmd):  # a fresh image may have no package lists
            r = subprocess.run(attempt, env=env, capture_output=True, text=True, timeout=timeout)
            log = (r.stdout + r.stderr)[-2000:]
            if attempt is cmd and r.returncode == 0:
                return "installed chromium and chromium-driver with apt-get"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get failed: {exc}"
    return f"`{' '.join(cmd)}` failed:\n{log}"


@dataclass
class _Server:
    root: Path
    errors: list[tuple[str, str, int]] = field(default_factory=list)  # (path, referer, status)

    @contextmanager
    def serve(self):
        errors = self.errors

        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code="-", size="-"):
                code = getattr(code, "value", code)
                if isinstance(code, int) and code >= 400:
                    errors.append((urlsplit(self.path).path, self.headers.get("Referer", ""), code))

            def log_message(self, *args):  # quiet
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(self.root)))
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, name="rsbook-browser-http", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}/"
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)


@contextmanager
def _chromium(chromium: str, driver: str, page_timeout: float):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="rsbook-chromium-") as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={profile}")
        # the given chromedriver: Selenium Manager never runs (it would try to download one)
        browser = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
        try:
            browser.set_page_load_timeout(page_timeout)
            browser.set_script_timeout(page_timeout + 30)
            yield browser
        finally:
            browser.quit()


# Runs in the page after load: waits for MathJax and the images, then collects what the Python
# side judges. Excluded subtrees (code, MathJax output) are left out of the text blocks.
_COLLECT_JS = r"""
const done = arguments[arguments.length - 1];
const timeoutMs = arguments[0];
const sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  const t0 = Date.now();
  const out = {};
  const wantsMathJax = !!document.querySelector('script[src*="mathjax" i]') || typeof window.MathJax !== 'undefined';
  out.mathjax = 'absent';
  if (wantsMathJax) {
    const ready = () => window.MathJax && MathJax.startup && MathJax.startup.promise;
    while (!ready() && Date.now() - t0 < timeoutMs) await sleep(25);
    if (!ready()) out.mathjax = 'never started';
    else {
      try {
        out.mathjax = await Promise.race([MathJax.startup.promise.then(() => 'done'),
                                          sleep(Math.max(0, timeoutMs - (Date.now() - t0))).then(() => 'timed out')]);
      } catch (e) { out.mathjax = 'failed: ' + e; }
    }
  }
  const imgs = Array.from(document.images);
  for (const i of imgs) if (i.loading === 'lazy') i.loading = 'eager';
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r, {once: true}); i.addEventListener('error', r, {once: true}); setTimeout(r, timeoutMs);
  })));
  out.images = imgs.map(i => ({src: i.getAttribute('src') || '', url: i.currentSrc || i.src || '',
                               complete: i.complete, width: i.naturalWidth}));
  out.links = Array.from(document.querySelectorAll('a[href]')).map(a => ({href: a.getAttribute('href'), url: a.href}));
  out.ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name')));
  // error outputs
  const snip = s => s.replace(/\s+/g, ' ').trim().slice(0, 160);
  out.tracebacks = Array.from(document.querySelectorAll('.output.traceback')).map(e => snip(e.textContent));
  out.outputs = Array.from(document.querySelectorAll('.cell_output, div.output')).filter(
      e => !e.parentElement.closest('.cell_output, div.output')).map(e => e.textContent);
  out.streams = Array.from(document.querySelectorAll('.output.stream, .output.stderr, .output.text_plain')).map(e => e.textContent);
  out.papermill = !!document.getElementById('papermill-error-cell') ||
                  !!document.querySelector('a[href="#papermill-error-cell"]');  // the banner links to the failed cell
  // math
  out.merrors = Array.from(document.querySelectorAll('mjx-merror')).map(e => snip(e.getAttribute('data-mjx-error') || e.textContent));
  const skip = 'code, pre, kbd, samp, tt, script, style, noscript, template, textarea, .highlight, mjx-container, .MathJax';
  const block = 'p, li, dt, dd, td, th, h1, h2, h3, h4, h5, h6, caption, figcaption, blockquote, div, section, article, main, ' +
                'nav, aside, header, footer, body';
  const texts = new Map();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || el.closest(skip) || !/[$\\]/.test(n.nodeValue)) continue;
    const b = el.closest(block) || document.body;
    if (!texts.has(b)) {
      // the block's whole text, less its skipped subtrees, so "$" pairs split across inline tags are seen
      const w = document.createTreeWalker(b, NodeFilter.SHOW_TEXT);
      let s = '';
      for (let m = w.nextNode(); m; m = w.nextNode()) {
        const p = m.parentElement;
        if (p && !p.closest(skip) && (p.closest(block) || document.body) === b) s += m.nodeValue;
        else if (p && p.closest(skip)) s += ' ';
      }
      texts.set(b, s);
    }
  }
  out.texts = Array.from(texts.values());
  out.title = document.title;
  return out;
})().then(done, e => done({fatal: String(e && e.stack || e)}));
"""


def _snippet(text: str, span: str, width: int = 50) -> str:
    i = text.find(span)
    s = text[max(0, i - width) : i + len(span) + width] if i >= 0 else span
    return " ".join(s.split())


def check_book(
    root: str | os.PathLike,
    *,
    pages: list[str | os.PathLike] | None = None,
    timeout: float = 30.0,
    browser: tuple[str, str] | None = None,
) -> dict[str, list[str]]:
    """Open every page of the built book at ``root`` in headless chromium; the problems per page.

    Args:
        root: the HTML folder (``_build/html``).
        pages: the pages to open, relative to ``root`` (default :func:`book_pages`).
        timeout: seconds a page, its images, and MathJax may take.
        browser: ``(chromium, chromedriver)`` paths (default :func:`find_browser`).

    Returns:
        ``{page: [problem, ...]}`` for every page checked (an empty list when it passed), keys
        as POSIX paths relative to ``root``. See the module's docstring for the checks.

    Raises:
        BrowserMissing: chromium, chromedriver or selenium is missing.
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no built book at {root}")
    chromium, driver = browser or find_browser()
    page_list = [Path(p) for p in (pages if pages is not None else book_pages(root))]
    _parse_static.cache_clear()
    problems: dict[str, list[str]] = {p.as_posix(): [] for p in page_list}
    dom_ids: dict[Path, set[str]] = {}
    links: list[tuple[str, str, str]] = []  # (page, href as written, absolute url)
    server = _Server(root)
    with server.serve() as base, _chromium(chromium, driver, timeout) as browser_:
        for rel in page_list:
            key = rel.as_posix()
            url = urljoin(base, key)
            refresh = _parse_static(root / rel).refresh
            if refresh is not None:  # a redirect page: its target must exist, like a link
                links.append((key, refresh, urljoin(url, refresh)))
                continue
            n_err = len(server.errors)
            file_ids = _parse_static(root / rel).ids
            try:
                for attempt in range(LOAD_ATTEMPTS):
                    browser_.get(url)
                    data = browser_.execute_async_script(_COLLECT_JS, int(timeout * 1000))
                    # a complete load has every id the file has (scripts may add ids, not remove
                    # them); a load cut short (a connection the server or the browser dropped) is
                    # retried rather than reported as broken links into the page
                    lost = sorted(file_ids - set(data.get("ids", ()))) if not data.get("fatal") else []
                    if not lost:
                        break
            except Exception as exc:  # noqa: BLE001 -- selenium's time-outs and driver errors: report, go on
                problems[key].append(f"page: did not load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                continue
            if data.get("fatal"):
                problems[key].append(f"page: the checker's script failed: {data['fatal'][:300]}")
                continue
            found = problems[key]
            if lost:
                found.append(
                    f"page: loaded incomplete {LOAD_ATTEMPTS} times: the browser's page lacks {len(lost)} of the "
                    f"file's {len(file_ids)} ids (first {lost[0]!r})"
                )
            dom_ids[(root / rel).resolve()] = set(data["ids"]) | (file_ids if lost else set())
            # images
            for img in data["images"]:
                what = []
                if not img["complete"] or not img["width"]:
                    what.append("not loaded in the browser (naturalWidth 0)")
                u = urlsplit(img["url"])
                if u.scheme in ("http", "https") and u.netloc == urlsplit(base).netloc:
                    f = _target_file(root, u.path)
                    if f is None or not f.is_file():
                        what.append("file missing")
                    elif f.stat().st_size == 0:
                        what.append("file is empty (0 bytes)")
                elif u.scheme in ("http", "https"):
                    continue  # another host: not checked (closed network)
                if what:
                    found.append(f"image: {img['src'] or '(no src)'}: {', '.join(what)}")
            links += [(key, a["href"], a["url"]) for a in data["links"]]
            # errors in cell outputs
            found += [f"error: a cell's error output: {t}" for t in data["tracebacks"]]
            seen = set()
            for text in data["outputs"]:
                seen.update(error_lines(text, stream=False))
            for text in data["streams"]:
                seen.update(error_lines(text, stream=True))
            found += [f"error: in a cell output: {e}" for e in sorted(seen)]
            if data["papermill"]:
                found.append("error: papermill's failure banner (a cell of the chapter raised)")
            # math
            if data["mathjax"] not in ("absent", "done"):
                found.append(f"math: MathJax {data['mathjax']}")
            found += [f"math: MathJax error: {e}" for e in data["merrors"]]
            for text in data["texts"]:
                for span in unrendered_math(text):
                    found.append(f"math: unrendered {span!r} in: {_snippet(text, span)!r}")
            # resources the page asked for that the server did not have
            time.sleep(0.05)
            images = {urlsplit(img["url"]).path for img in data["images"]}  # reported above, as images
            for path, referer, status in server.errors[n_err:]:
                if path != "/favicon.ico" and path not in images:
                    by = f" (asked by {urlsplit(referer).path})" if referer and referer != url else ""
                    found.append(f"resource: {path} answered HTTP {status}{by}")
    # internal links, once every page's ids are known
    netloc = urlsplit(base).netloc
    for key, href, absolute in links:
        u = urlsplit(absolute)
        if u.scheme not in ("http", "https") or u.netloc != netloc:
            continue
        target = _target_file(root, u.path)
        if target is None or not target.is_file():
            shown = target.relative_to(root).as_posix() if target is not None else u.path
            problems[key].append(f"link: {href!r}: no file {shown}")
            continue
        frag = unquote(u.fragment)
        if not frag or frag.startswith(":~:") or target.suffix not in (".html", ".htm"):
            continue
        ids = dom_ids.get(target)
        if ids is None:
            ids = _parse_static(target).ids
        if frag not in ids:
            problems[key].append(f"link: {href!r}: {target.relative_to(root).as_posix()} has no element with id {frag!r}")
    for key in problems:  # the same problem reported once per page, in order
        problems[key] = list(dict.fromkeys(problems[key]))
    return problems


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rsbook.book.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per page (default 30)")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    problems = check_book(args.html, timeout=args.timeout)
    print(format_report(problems, root=args.html))
    print(f"[rsbook] browser check of {len(problems)} pages in {time.perf_counter() - t:.1f} s")
    return 1 if any(problems.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
