"""render_report: escaping, sections, self-containment; and a real browser (headless Chromium)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from tests.report.report_data import EVIL_CLASS, EVIL_ID, make_curated
from winnow.stages.report import render_report
from winnow.stages.report.inspect import flagged_indices
from winnow.stages.report.render import csp_hash, review_script

SECTIONS = ("summary", "classes", "confusion", "weights", "flagged", "coreset", "issues", "errors")
CHROMIUM = "/usr/bin/chromium"


class _Collector(HTMLParser):
    """Tags, attributes, section ids and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.sections: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "section":
            self.sections += [v for k, v in attrs if k == "id"]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Collector:
    c = _Collector()
    c.feed(page)
    return c


def _no_other_script(page: str) -> str:
    """The page without its one script (the package's constant review.js, allowed by its CSP hash);
    asserts that script is there exactly once and that the CSP names its hash."""
    own = f"<script>{review_script()}</script>"
    assert page.count(own) == 1 and f"script-src '{csp_hash(review_script())}'" in page
    return page.replace(own, "")


def _render(curated: pa.Table, **kw: object) -> str:
    summary = {"noise_estimate": 0.3, "counts": {EVIL_CLASS: 3, "zero": 10}, "thresholds": {"flag": 0.5}}
    return render_report(curated, summary, evaluation={"flags": {"precision": 0.9, "auroc": 0.97}},
                         coreset_metrics={"objective": 12.5, "coverage": 0.93}, **kw)


def test_every_user_string_is_escaped(curated):
    page = _render(curated, title='<img src=x onerror="alert(2)"> run')
    assert "<script" not in _no_other_script(page).lower()
    assert EVIL_CLASS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Quotes as either entity form (html.escape's &quot;/&#x27; or the template engine's &#34;/&#39;).
    q, a = "(&quot;|&#34;)", "(&#x27;|&#39;)"
    assert EVIL_ID not in page and re.search(f"row{q}7{a}&lt;b&gt;&amp;", page)
    assert re.search(f"&lt;bad&gt; &amp; {q}broken{q}", page)  # the error reason
    assert "onerror" not in {k for _, k, _ in _parse(page).attrs}
    text = "".join(_parse(page).text)
    assert EVIL_CLASS in text and EVIL_ID in text  # ...and reads back as the original strings


def test_sections_thumbnails_and_truth(curated):
    page = _render(curated, top=5)
    parsed = _parse(page)
    assert set(parsed.sections) == set(SECTIONS) | {"evaluation"}
    thumbs = [v for t, k, v in parsed.attrs if t == "img" and k == "alt" and v == "example"]
    assert len(thumbs) == 5
    text = "".join(parsed.text)
    assert "flag precision" in text and "true noise rate" in text and "noisy (truth)" in text
    top_id = curated.column("id")[int(flagged_indices(curated, top=1)[0])].as_py()
    assert text.index(top_id) < text.index("Coreset coverage")
    assert "truth:" in text and "Selection metrics" in text


def test_page_is_self_contained(curated):
    page = _render(curated)
    for tag, key, value in _parse(page).attrs:
        if key == "src":
            assert value.startswith("data:image/png;base64,"), (tag, value[:40])
        if key == "href":
            assert value.startswith("#"), value
    assert not re.search(r"https?://|url\(|@import|<link", page)


def test_partial_tables_render_with_notes():
    bare = pa.table({"id": ["a", "b"], "label": pa.array([0, 1], pa.int32()), "split": ["train", "train"]})
    page = render_report(bare, {})
    parsed = _parse(page)
    assert set(SECTIONS) <= set(parsed.sections)
    text = "".join(parsed.text)
    assert "no suggested labels" in text and "no coreset selection" in text and "no row has an error" in text
    no_truth = _render(make_curated(truth=False))
    assert "truth:" not in "".join(_parse(no_truth).text)
    with pytest.raises(ValueError, match="--top"):
        render_report(bare, {}, top=0)


def test_many_classes_draw_the_confusion_matrix_as_an_image():
    k, n = 40, 400
    rng = np.random.default_rng(0)
    table = pa.table({"id": [str(i) for i in range(n)], "label": pa.array(rng.integers(0, k, n), pa.int32()),
                      "suggested_label": pa.array(rng.integers(0, k, n), pa.int32()),
                      "noise_score": rng.random(n), "noise_flag": rng.random(n) < 0.2, "weight": rng.random(n)})
    page = render_report(table, {})
    assert 'alt="confusion matrix"' in page and 'class="confusion"' not in page


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp}",
           "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_report_in_headless_chromium(curated, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(_render(curated), encoding="utf-8")
    shot = tmp_path / "report.png"
    run = _chromium([f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()], tmp_path / "p1")
    assert shot.is_file(), run.stderr[-2000:]
    assert _console(run.stderr) == []
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (1600, 1200) and img.std() > 10  # something was drawn, not a blank page

    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "p2")
    assert _console(dom.stderr) == []
    parsed = _parse(dom.stdout)
    assert set(SECTIONS) <= set(parsed.sections)
    assert parsed.tags.count("script") == 1  # review.js; nothing of the data runs
    assert EVIL_CLASS in "".join(parsed.text)

    # Negative control: the console check does catch a page that breaks the rules.
    bad = tmp_path / "bad.html"
    bad.write_text(_render(curated).replace("</main>", "<script>console.log(1)</script></main>"), encoding="utf-8")
    assert _console(_chromium(["--dump-dom", bad.as_uri()], tmp_path / "p3").stderr)


def test_summary_says_whether_the_meta_weights_were_used(curated):
    for used, verdict in ((True, "used (agreement 0.88)"), (False, "left out (agreement 0.56)")):
        check = {"agreement_auroc": 0.88 if used else 0.56, "min_agreement": 0.7, "used": used}
        text = "".join(_parse(render_report(curated, {"meta_signal_check": check})).text)
        assert "meta weights in noise_score" in text and verdict in text


def test_summary_names_the_trusted_vote_export_chose(curated):
    for vote, words in (("linear", "linear model of the trusted rows, share 0.6"),
                        ("knn", "nearest trusted rows, share 0.6")):
        text = "".join(_parse(render_report(curated, {"knn_weight": {"value": 0.6, "vote": vote}})).text)
        assert "trusted rows' vote" in text and words in text


def test_meta_weight_net_curve_is_labelled_as_such_and_rounds_still_shown(curated, monkeypatch):
    """The loss -> weight curve was drawn with the per-round axes ("round", "mean weight"), and the
    per-round curves disappeared whenever it was present (found in review)."""
    from winnow.stages.report import plots

    calls = []
    real = plots.curve_plot

    def spy(curves, **kw):
        calls.append(kw)
        return real(curves, **kw)

    monkeypatch.setattr(plots, "curve_plot", spy)
    page = _render(curated, weight_curve={"x": [0.0, 1.0, 2.0], "weight": [0.9, 0.5, 0.1]})
    assert "Weight curve" in page and "Mean weight per round" in page
    assert calls[0]["xlabel"] == "per-example loss" and "x" in calls[0]
    assert calls[1].get("xlabel", "round") == "round"


def test_template_escapes_a_script_in_a_label_name_and_a_file_name():
    """The page is a jinja2 template with autoescape: a class name and a uri (file name) carrying
    a script stay text wherever they appear (per-class table, confusion matrix, flagged figures,
    summary keys)."""
    evil_name, evil_uri = "<script>alert('cls')</script>", '/data/<script>alert("uri")</script>.png'
    table = make_curated(classes=["zero", evil_name, "two", "three"])
    table = table.set_column(table.schema.get_field_index("uri"), "uri", pa.array([evil_uri] * table.num_rows))
    page = render_report(table, {evil_name: {evil_uri: 1}}, top=3)
    assert "<script" not in _no_other_script(page).lower() and "alert(" in page
    parsed = _parse(_no_other_script(page))
    assert "script" not in parsed.tags
    text = "".join(parsed.text)
    assert text.count(evil_uri) == 3 + 1  # three flagged figures and the summary key
    assert text.count(evil_name) >= 3  # per-class table, confusion row and column, summary


def test_the_template_ships_as_package_data():
    """The page is a template file, not code: the wheel has it only if pyproject lists it."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    folder = root / "winnow" / "stages" / "report"
    templates = [p.relative_to(folder).as_posix() for p in (folder / "templates").iterdir()]
    assert templates
    for name in templates:
        assert any(fnmatch.fnmatch(name, g) for g in package_data["winnow.stages.report"]), name


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium at /usr/bin/chromium")
def test_review_buttons_download_a_corrections_file_the_cli_reads(curated, tmp_path):
    """Click accept, drop, set-label and keep on four flagged figures in headless Chromium, press
    download, and read the file the browser saved with winnow's own reader."""
    from winnow.stages.review import in_force, read_corrections

    clicks = """
document.getElementById('winnow-reviewer').value = 'ann';
var figs = document.querySelectorAll('figure[data-id]');
figs[0].querySelector('[data-action=accept]').click();
figs[1].querySelector('[data-action=drop]').click();
var sel = figs[2].querySelector('select.relabel'); sel.value = '1';
sel.dispatchEvent(new Event('change', {bubbles: true}));
figs[3].querySelector('[data-action=keep]').click();
document.getElementById('winnow-save').click();
"""
    page = _render(curated)
    page = page.replace("script-src '", f"script-src '{csp_hash(clicks)}' '").replace(
        "</body>", f"<script>{clicks}</script></body>")
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom",
           (tmp_path / "report.html").as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False, env={**os.environ, "HOME": str(home)})
    assert _console(run.stderr) == [], _console(run.stderr)
    saved = home / "Downloads" / "corrections.csv"
    assert saved.is_file(), run.stderr[-2000:]
    figures = re.findall(r'<figure data-id="([^"]*)" data-given="(\d+)" data-suggested="(\d*)"', page)
    log = read_corrections(saved)
    assert log["id"].to_pylist() == [f[0] for f in figures[:4]]
    assert log["action"].to_pylist() == ["accept", "drop", "relabel", "keep"]
    assert log["label"].to_pylist() == [int(figures[0][2]), None, 1, int(figures[3][1])]
    assert log["reviewer"].to_pylist() == ["ann"] * 4
    assert len(in_force(log)) == 4


def test_data_issues_section_puts_leakage_first_and_escapes_ids(curated):
    audit = {"duplicates": {"exact": 2, "near": 1, "leakage": {"rows": 1, "examples": [[EVIL_ID, "train-7"]]},
                            "different_labels": {"rows": 0, "examples": []}},
             "outliers": {"flagged": 3, "threshold": 0.5, "calibrated_on": "the 99% quantile of the trusted rows' scores",
                          "top": [{"id": "odd-1", "score": 0.9}]},
             "class_overlap": {"pairs": [{"classes": [EVIL_CLASS, "zero"], "overlap": 0.4}],
                               "matrix": [[0.8, 0.2], [0.3, 0.7]]},
             "class_balance": {"max_min_ratio": 3.0, "near_empty_classes": ["zero"]}}
    page = render_report(curated, {"audit": audit})
    parsed = _parse(_no_other_script(page))
    assert "issues" in parsed.sections and "script" not in parsed.tags
    text = "".join(parsed.text)
    assert "Leakage: test rows with a twin in train or trusted" in text and EVIL_ID in text and "train-7" in text
    assert text.index("test rows leaked from train") < text.index("Outliers")
    assert "near-empty classes: zero" in text and 'alt="class overlap"' in page
    assert "no audit in this run" in "".join(_parse(render_report(curated, {})).text)
