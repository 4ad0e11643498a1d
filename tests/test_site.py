"""The course as a website (`make site`, docs/site.md): built from the stored notebooks, read in a real browser.

The build is the Makefile's `SITE_BUILD` line, into a temporary folder. It must pass with `-W`, and fail on a
broken page (a missing panel picture, a link to nowhere, a notebook that is not JSON). A local HTTP server then
serves the site, and headless Chromium, with every request to another machine refused, opens the landing
page and each notebook page: the title, every image loaded (the stored plots and the panel's still picture),
math typeset by MathJax (no `$…$` or `\\(` left in the text), the link to the .ipynb and the command that opens
it. Every internal link of every page answers 200 and its #anchor exists; the search box finds REINFORCE.
Each notebook page's screenshot lands in output/site/ (docs/img/site_page.png is one of them).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

from browser_helpers import CHROMIUM_ARGS, find_chromium, missing_browser_reason

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SCREENSHOTS = ROOT / "output" / "site"
WIDGET = "application/vnd.jupyter.widget-view+json"
RAW_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$[^$\s][^$\n]*\$|\\begin\{")


# The local server only, whatever proxy the environment names.
_fetch = urllib.request.build_opener(urllib.request.ProxyHandler({})).open


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _build(src: Path, site: Path) -> subprocess.CompletedProcess:
    """`make site`'s build line (the Makefile's SITE_BUILD) run on `src` into `site`, with this Python."""
    line = re.search(r"^SITE_BUILD := (.*)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    args = line.replace("$(SITE)", str(site)).split()
    assert args[0] == "python", line
    return subprocess.run([sys.executable, *args[1:]], cwd=src, capture_output=True, text=True, timeout=600)


def _notebook(path: Path) -> dict:
    nb = json.loads(path.read_text())
    title = "".join(nb["cells"][0]["source"]).splitlines()[0].lstrip("# ").strip()
    markdown = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    outputs = [o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", [])]
    return {"title": title, "has_math": "$" in markdown,
            "images": sum("image/png" in d and WIDGET not in d for d in outputs) + markdown.count("!["),
            "panels": sum(WIDGET in d for d in outputs)}


# --------------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = _build(ROOT, out)
    assert done.returncode == 0, f"the site's build failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return out / "html"


def _mini_course(dest: Path, notebooks: list[Path]) -> Path:
    """The build's inputs for a landing page and a few notebooks (with their panel pictures)."""
    (dest / "notebooks" / "img").mkdir(parents=True)
    shutil.copytree(ROOT / "docs", dest / "docs", ignore=shutil.ignore_patterns("*.md", "img", "__pycache__"))
    for nb in notebooks:
        shutil.copy(nb, dest / "notebooks")
        shutil.copy(ROOT / "notebooks" / "img" / f"{nb.stem}_panel.png", dest / "notebooks" / "img")
    toctree = "\n".join(f"notebooks/{nb.stem}" for nb in notebooks)
    (dest / "index.md").write_text(f"# A course\n\n```{{toctree}}\n{toctree}\n```\n")
    return dest


def _missing_picture_and_link(src: Path, notebooks: list[Path]) -> dict[str, str]:
    stem = notebooks[0].stem
    (src / "notebooks" / "img" / f"{stem}_panel.png").unlink()
    with open(src / "index.md", "a") as f:
        f.write("\nSee [the missing page](docs/nowhere.md).\n")
    return {f"image file not readable: notebooks/img/{stem}_panel.png": "a missing panel picture",
            "docs/nowhere.md": "a link to nowhere"}


def _not_json(src: Path, notebooks: list[Path]) -> dict[str, str]:
    path = src / "notebooks" / notebooks[1].name
    path.write_text(path.read_text()[:-200])
    return {f"notebooks/{notebooks[1].stem}": "a notebook that is not JSON"}


@pytest.mark.parametrize("breakage", [None, _missing_picture_and_link, _not_json],
                         ids=["intact", "missing-picture-and-link", "notebook-not-json"])
def test_build_fails_on_a_broken_page(tmp_path, breakage):
    """A two-notebook course builds intact; broken, the build fails and names what is broken: a missing panel
    picture and a link to nowhere (--keep-going reports both), a notebook that is not JSON."""
    notebooks = [p for p in NOTEBOOKS if _notebook(p)["panels"]][:2]
    assert len(notebooks) == 2, "two notebooks with a widget panel"
    src = _mini_course(tmp_path / "src", notebooks)
    causes = breakage(src, notebooks) if breakage else {}
    done = _build(src, tmp_path / "site")
    log = done.stdout + done.stderr
    assert (done.returncode != 0) == bool(breakage), f"build exit status {done.returncode}:\n{log[-3000:]}"
    for message, cause in causes.items():
        assert message in log, f"the build did not report {cause} ({message!r}):\n{log[-3000:]}"


# --------------------------------------------------------------------------------------------
# The site in a browser, from a local server, the network off
# --------------------------------------------------------------------------------------------
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser left before the end of a file
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(site):
    httpd = _Server(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def browser(server):
    """One Chromium context whose only way out is a proxy that refuses every connection: the local server is
    reached directly, any other address fails at once. `context.offsite` lists what a page asked for there."""
    reason = missing_browser_reason()
    if reason:
        if _ci():
            pytest.fail(f"CI is set, so the site's browser test must run, but: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with socket.socket() as dead, sync_playwright() as pw:
        dead.bind(("127.0.0.1", 0))  # bound, never listening: a connection to it is refused
        proxy = {"server": f"http://127.0.0.1:{dead.getsockname()[1]}", "bypass": "127.0.0.1,localhost"}
        chromium = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, proxy=proxy,
                                      timeout=60_000)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(60_000)
            context.offsite = []

            def note_offsite(request):
                if urlparse(request.url).hostname not in ("127.0.0.1", "localhost", None):  # None: data: URLs
                    context.offsite.append(request.url)

            context.on("request", note_offsite)
            yield context
        finally:
            chromium.close()


_IMAGES_JS = "() => Array.from(document.querySelectorAll('main img')).map(i => [i.getAttribute('src'), i.naturalWidth])"
# The article's text without code, and without MathJax's own output: what is left of math is raw TeX.
_PROSE_JS = """() => { const main = document.querySelector('main').cloneNode(true);
  main.querySelectorAll('pre, code, mjx-container, script, style').forEach(e => e.remove());
  return main.textContent; }"""


def _open(context, url: str):
    context.offsite.clear()
    page = context.new_page()
    page.goto(url, wait_until="load")
    # MathJax is on the pages with math (a deferred script: there by "load"); this resolves once it has typeset.
    page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
    page.evaluate("() => Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
    return page


def _screenshot(page, path: Path) -> None:
    """A PNG of the window, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(page.screenshot())
    os.replace(tmp, path)


def _check_math_and_images(page, name: str, has_math: bool, images: int) -> list:
    loaded = page.evaluate(_IMAGES_JS)
    assert len(loaded) >= images, f"{name}: {len(loaded)} images on the page, the source has {images}"
    broken = [src for src, width in loaded if not width > 0]
    assert not broken, f"{name}: images not loaded: {broken}"
    raw = sorted(set(RAW_MATH.findall(page.evaluate(_PROSE_JS))))
    assert not raw, f"{name}: math left as raw TeX in the text: {raw[:10]}"
    assert page.locator("mjx-merror").count() == 0, f"{name}: MathJax could not typeset some math"
    if has_math:
        assert page.locator("main mjx-container").count() > 0, f"{name}: no math typeset by MathJax"
    return loaded


def test_landing_page(server, browser):
    """The README's opening and course map, its pictures loaded, and a link to every notebook page."""
    page = _open(browser, server)
    try:
        readme = (ROOT / "README.md").read_text()
        title = readme.splitlines()[0].lstrip("# ")
        assert page.title().startswith(title), page.title()
        course = readme[readme.index("## The course"):readme.index("## Run the tests")]
        pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", course)
        loaded = _check_math_and_images(page, "index.html", False, len(pictures))
        for picture in pictures:
            assert any(src.endswith(Path(picture).name) for src, _ in loaded), f"index.html: no {picture}"
        text = page.locator("main").inner_text()
        for row in re.findall(r"^\| `(\d\d_\w+)` \|", course, flags=re.M):
            assert row in text, f"index.html: the course map has no row {row}"
        links = page.evaluate("() => Array.from(document.querySelectorAll('a')).map(a => a.href)")
        for nb in NOTEBOOKS:
            assert urljoin(server, f"notebooks/{nb.stem}.html") in links, f"index.html: no link to {nb.stem}"
        assert not browser.offsite, f"requests off this machine: {browser.offsite}"
    finally:
        page.close()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_page(notebook: Path, server, browser):
    """The notebook's title, its stored plots and panel pictures loaded, its math typeset, its file and the
    command that opens it."""
    nb = _notebook(notebook)
    (SCREENSHOTS / f"{notebook.stem}_failure.png").unlink(missing_ok=True)
    page = _open(browser, urljoin(server, f"notebooks/{notebook.stem}.html"))
    try:
        assert page.title().startswith(nb["title"]), (page.title(), nb["title"])
        assert nb["title"] in page.locator("main h1").first.inner_text()
        loaded = _check_math_and_images(page, notebook.name, nb["has_math"], nb["images"] + nb["panels"])
        panels = [src for src, _ in loaded if src.endswith(f"{notebook.stem}_panel.png")]
        assert len(panels) == nb["panels"], f"{notebook.name}: {nb['panels']} widgets, panel pictures {panels}"
        text = page.locator("main").inner_text()
        assert "VBox(children=" not in text, f"{notebook.name}: a widget shown as its text, not its picture"
        assert "make course" in text, f"{notebook.name}: the page does not name the command that opens it"
        href = page.locator(f"main a[href$='/{notebook.name}']").first.get_attribute("href")
        with _fetch(urljoin(page.url, href), timeout=10) as resp:
            assert resp.read() == notebook.read_bytes(), f"{notebook.name}: the page's .ipynb link is another file"
        # the page down to its first stored plot (code, printed output, the plot)
        page.locator("main img").first.evaluate("e => e.scrollIntoView({block: 'end'})")
        _screenshot(page, SCREENSHOTS / f"{notebook.stem}.png")
        assert not browser.offsite, f"requests off this machine: {browser.offsite}"
    except BaseException:
        with contextlib.suppress(Exception):  # the failure itself is what gets reported
            _screenshot(page, SCREENSHOTS / f"{notebook.stem}_failure.png")
        raise
    finally:
        page.close()


def test_search_finds_reinforce(server, browser):
    """The search box, typed into as a reader would, lists the notebooks whose title names REINFORCE."""
    wanted = [nb.stem for nb in NOTEBOOKS if "REINFORCE" in _notebook(nb)["title"]]
    assert wanted, "no notebook title names REINFORCE"
    page = _open(browser, server)
    try:
        page.locator("button.search-button__button:visible").first.click()
        box = page.locator("#pst-search-dialog input[type=search]")
        box.fill("REINFORCE")
        box.press("Enter")
        page.wait_for_url(re.compile(r"search\.html\?q=REINFORCE"))
        results = page.locator("#search-results li a")
        results.first.wait_for(timeout=30_000)
        hrefs = [a.get_attribute("href") for a in results.all()]
        for stem in wanted:
            assert any(f"notebooks/{stem}.html" in h for h in hrefs), f"search for REINFORCE: no {stem} in {hrefs}"
        assert not browser.offsite, f"requests off this machine: {browser.offsite}"
    finally:
        page.close()


def test_every_internal_link_resolves(site, server):
    """Every href and src on every page: an internal one answers 200 and its #anchor exists on the target;
    no page loads a script, style sheet, font or image from another machine."""
    from bs4 import BeautifulSoup

    pages = sorted(p for p in site.rglob("*.html") if p.parts[len(site.parts)] != "_static")
    ids: dict[str, set[str]] = {}
    targets: dict[str, set[str]] = {}
    for path in pages:
        url = urljoin(server, path.relative_to(site).as_posix())
        soup = BeautifulSoup(path.read_text(), "html.parser")
        ids[url] = {tag["id"] for tag in soup.select("[id]")}
        for tag, attr in [(t, a) for a in ("href", "src") for t in soup.select(f"[{a}]")]:
            ref = tag[attr]
            if urlparse(ref).scheme in ("http", "https"):
                assert tag.name == "a", f"{path.relative_to(site)} loads {ref} from another machine"
                continue
            if urlparse(ref).scheme or ref in ("", "#"):
                continue  # mailto:, data:, javascript:, the theme's buttons
            targets.setdefault(urljoin(url, ref), set()).add(str(path.relative_to(site)))
    assert len(pages) >= len(NOTEBOOKS) + 1 and targets
    bad = []
    for target, where in sorted(targets.items()):
        base, anchor = urldefrag(target)
        try:
            with _fetch(base, timeout=10) as resp:
                status = resp.status
        except OSError as exc:
            status = getattr(exc, "code", exc)
        if status != 200:
            bad.append(f"{target}: {status} (from {sorted(where)[:3]})")
        elif anchor and base in ids and anchor not in ids[base]:
            bad.append(f"{target}: no #{anchor} there (from {sorted(where)[:3]})")
    assert not bad, "internal links that lead nowhere:\n" + "\n".join(bad)
    for css in site.rglob("*.css"):
        remote = re.findall(r"(?:url\(|@import)\s*['\"]?(https?:[^'\")\s]+)", css.read_text(errors="replace"))
        assert not remote, f"{css.relative_to(site)} loads {remote} from another machine"
