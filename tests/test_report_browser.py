"""report.html in a real browser: headless Chromium, Debian's package, driven by playwright
for Python (``executable_path``; never ``playwright install``, no browser download).

Without chromium or playwright these tests skip, with the reason; with
SEQBENCH_REQUIRE_BROWSER=1 (``.ci/run`` sets it after installing chromium) they fail
instead, so CI can never pass by skipping. One small synthetic sweep and one browser
launch serve the whole module (about 10 s).
"""

from __future__ import annotations

import os
import re
import shutil

import pytest

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import make_report

pytestmark = pytest.mark.slow

REQUIRE = "SEQBENCH_REQUIRE_BROWSER"
VIEWPORT = {"width": 1280, "height": 800}
MISSING = {"", "—"}
NUMBER = re.compile(r"^[+\-−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:e[+\-]?\d+)?",
                    re.I)


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium")
    if exe is None:
        _unavailable("chromium is not installed (Debian: `apt-get install -y chromium`; "
                     ".ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (`make setup` installs it "
                     "with the dev extra; no `playwright install` is needed)")
    with sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, timeout=60_000)
        except Exception as e:  # the driver and this chromium do not get along
            _unavailable(f"playwright could not start {exe}: {str(e).strip().splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    sweep = write_synthetic_sweep(root / "runs", steps=40, eval_every=10, seed=0,
                                  clips=(("none", None), ("norm", 1.0)), seeds=(0, 1),
                                  lrs=(0.01, 0.1, 1.0))
    return make_report(sweep.root, root / "report")


class Loaded:
    """The report opened once; what happened while it loaded."""

    def __init__(self, browser, path):
        self.url = path.as_uri()
        self.page = browser.new_page(viewport=VIEWPORT)
        self.page.set_default_timeout(30_000)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url[:200]))
        self.page.on("requestfailed",
                     lambda r: self.failed.append(f"{r.url[:200]}: {r.failure}"))
        self.page.goto(self.url, wait_until="load")


@pytest.fixture(scope="module")
def loaded(browser, report):
    page = Loaded(browser, report.paths["report_html"])
    yield page
    page.page.close()


def test_loads_without_console_errors_or_network(loaded):
    assert loaded.errors == []
    assert loaded.failed == []
    # the document itself, nothing else (data: URIs are no requests)
    assert loaded.requests == [loaded.url]


def test_every_image_decodes_and_every_figure_has_a_caption(loaded, report):
    imgs = loaded.page.eval_on_selector_all(
        "img", "els => els.map(e => [e.alt, e.complete, e.naturalWidth, e.naturalHeight])")
    assert len(imgs) == len(report.figures) > 0
    for alt, complete, width, height in imgs:
        assert complete and width > 0 and height > 0, alt
    captions = loaded.page.eval_on_selector_all(
        "figure", "els => els.map(f => (f.querySelector('figcaption') || {}).textContent)")
    assert len(captions) == len(imgs) and all(c and c.strip() for c in captions)
    notes = " ".join(loaded.page.locator("p.note").all_text_contents())
    assert report.skipped  # this sweep logged no per-parameter norms
    for note in report.skipped.values():
        assert note in notes


def test_contents_link_every_section(loaded):
    ids = loaded.page.eval_on_selector_all("h2, h3", "hs => hs.map(h => h.id)")
    assert ids and all(ids) and len(set(ids)) == len(ids)
    hrefs = loaded.page.eval_on_selector_all("nav.toc a", "as => as.map(a => a.hash)")
    assert [h[1:] for h in hrefs] == ids
    loaded.page.click(f"nav.toc a[href='#{ids[-1]}']")  # a link scrolls to its section
    top = loaded.page.evaluate(f"document.getElementById('{ids[-1]}').getBoundingClientRect().top")
    assert loaded.page.evaluate("location.hash") == f"#{ids[-1]}"
    assert 0 <= top < VIEWPORT["height"] and loaded.page.evaluate("window.scrollY") > 0
    loaded.page.evaluate("window.scrollTo(0, 0)")


def test_answer_table_is_in_the_first_screen(loaded, tmp_path):
    page = loaded.page
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "first_screen.png"))
    table = page.locator("#answer-table")
    assert table.count() == 1, ("report.html has no #answer-table (the Answer section: "
                                f"<h2 id=\"answer\"> and its table); see {tmp_path}")
    assert table.is_visible()
    top = table.evaluate("t => t.getBoundingClientRect().top")
    assert top < VIEWPORT["height"], f"#answer-table starts at {top} px; see {tmp_path}"


def _first_number(text: str) -> float | None:
    m = NUMBER.match(text)
    return None if m is None else float(m.group().replace(",", "").replace("−", "-"))


def test_clicking_a_header_sorts_the_table(browser, report):
    page = browser.new_page(viewport=VIEWPORT)
    try:
        page.goto(report.paths["report_html"].as_uri())
        table = page.locator("#configurations ~ table").first
        headers = [h.strip() for h in table.locator("thead th").all_text_contents()]

        def column(i: int) -> list[str]:
            return table.evaluate(
                "(t, i) => Array.from(t.tBodies[0].rows, r => r.cells[i].textContent.trim())", i)

        def rows() -> list[str]:
            return sorted(table.evaluate(
                "t => Array.from(t.tBodies[0].rows, r => r.textContent)"))

        def click(i: int) -> None:
            table.locator("thead th").nth(i).click()

        def aria() -> list[str | None]:
            return [table.locator("thead th").nth(i).get_attribute("aria-sort")
                    for i in range(len(headers))]

        all_rows = rows()
        # numbers with thousands separators (92,087 before 100,240), none missing
        tps = headers.index("tokens/s")
        before = column(tps)
        values = [_first_number(t) for t in before]
        assert None not in values and values != sorted(values)
        click(tps)
        assert [_first_number(t) for t in column(tps)] == sorted(values)
        assert aria()[tps] == "ascending"
        click(tps)
        assert [_first_number(t) for t in column(tps)] == sorted(values, reverse=True)
        assert aria()[tps] == "descending"
        assert rows() == all_rows  # whole rows moved

        # intervals ("1.54 [1.43, 1.66]") and missing values ("—"), which stay last
        q = next(i for i, h in enumerate(headers) if h.startswith("final val"))
        cells = column(q)
        present = sorted(_first_number(t) for t in cells if t not in MISSING)
        n_missing = sum(t in MISSING for t in cells)
        assert present and n_missing  # the test data has both
        click(q)
        after = column(q)
        assert [_first_number(t) for t in after[: len(present)]] == present
        assert all(t in MISSING for t in after[len(present):])
        assert aria()[q] == "ascending" and aria()[tps] is None
        click(q)
        after = column(q)
        assert [_first_number(t) for t in after[: len(present)]] == present[::-1]
        assert all(t in MISSING for t in after[len(present):])
        assert aria()[q] == "descending"
        assert rows() == all_rows
    finally:
        page.close()
