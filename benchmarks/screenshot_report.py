"""Screenshot a prunekit HTML report in headless Chromium at 1280 px and check what shows without scrolling.

    python benchmarks/screenshot_report.py RUN/report.html docs/img/report_1280.png [--width 1280 --height 900]
    python benchmarks/screenshot_report.py --smoke     # a one-table page into a temporary folder

Writes the PNG (the first screen, no scrolling) and prints, measured in the browser: the page's width
(``document.documentElement.scrollWidth``: > the window means a horizontal scrollbar), the right edge of
the first (narrow) comparison table, and whether the summary block and the first ``speed-up`` column
heading lie inside the first screen. Exit status 1 when one of those checks fails. Needs a chromium binary
(``apt-get install chromium``); opens the file with no network (the report is self-contained).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import add_smoke_flag, results_folder

#: ``--smoke``: the smallest page with every element the checks look for
SMOKE_PAGE = """<!doctype html><html><body><div class="summary">smoke</div>
<table class="compare"><tr><th>model</th><th>speed-up</th></tr><tr><td>a</td><td>1.00×</td></tr></table></body></html>"""

PROBE = """<script>window.addEventListener('load', () => {
  const box = el => el ? el.getBoundingClientRect() : null;
  const table = document.querySelector('table.compare');
  const speed = [...document.querySelectorAll('table.compare th')].find(th => th.textContent.startsWith('speed-up'));
  const summary = document.querySelector('.summary');
  const r = {pageWidth: document.documentElement.scrollWidth, windowWidth: window.innerWidth,
             windowHeight: window.innerHeight, tableRight: table ? box(table).right : null,
             speedupRight: speed ? box(speed).right : null, speedupBottom: speed ? box(speed).bottom : null,
             summaryBottom: summary ? box(summary).bottom : null,
             images: [...document.images].map(i => i.naturalWidth)};
  document.body.setAttribute('data-probe', JSON.stringify(r));
});</script></body>"""


def chromium(required: bool = True) -> str | None:
    """The headless browser's path; exits when there is none (returns None instead when not ``required``)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if required:
        sys.exit("no chromium binary (apt-get install chromium)")
    return None


def measure(browser: str, html: Path, width: int, height: int) -> dict:
    """Layout numbers of ``html`` in a ``width`` × ``height`` window (the probe script adds no content)."""
    import html as html_module

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(html.read_text().replace("</body>", PROBE))
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                              f"--window-size={width},{height}", "--virtual-time-budget=5000", "--dump-dom",
                              probe.as_uri()], capture_output=True, text=True, timeout=180).stdout
    raw = dom.split('data-probe="', 1)[1].split('"', 1)[0]
    return json.loads(html_module.unescape(raw))


def screenshot(browser: str, html: Path, out: Path, width: int, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--screenshot={out.resolve()}", html.resolve().as_uri()],
                   capture_output=True, timeout=180, check=True)


def checks(m: dict) -> dict[str, bool]:
    return {"no horizontal scrollbar": m["pageWidth"] <= m["windowWidth"],
            "narrow table fits the window": m["tableRight"] is not None and m["tableRight"] <= m["windowWidth"],
            "summary in the first screen": m["summaryBottom"] is not None and m["summaryBottom"] <= m["windowHeight"],
            "speed-up column in the first screen": (m["speedupRight"] is not None and m["speedupRight"] <= m["windowWidth"]
                                                    and m["speedupBottom"] <= m["windowHeight"]),
            "every image decoded": all(w > 0 for w in m["images"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, nargs="?")
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    add_smoke_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        folder = results_folder(True)
        args.html, args.out = folder / "smoke.html", folder / "smoke.png"
        args.html.write_text(SMOKE_PAGE)
    elif args.html is None or args.out is None:
        parser.error("give the report's HTML file and the PNG to write (or --smoke)")
    browser = chromium(required=not args.smoke)
    if browser is None:
        print("smoke: no chromium binary here, nothing to screenshot (apt-get install chromium to check the page)")
        return 0
    m = measure(browser, args.html, args.width, args.height)
    screenshot(browser, args.html, args.out, args.width, args.height)
    results = checks(m)
    print(json.dumps(m | {"checks": results}, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
