"""Render an HTML file in headless Chromium and report what a reader would see go wrong: images
that did not load, script and resource errors, console messages.

The page is copied with two small scripts added: one at the top of <head> that records error
events (resource errors included: they fire on the element, caught in the capture phase) and
console.error calls, one at the end of <body> that, on `load`, writes the count of images, the
ones not loaded (not complete or zero natural width) and the errors into an attribute of <body>.
Chromium's --dump-dom prints the resulting DOM; its --enable-logging output gives the console
messages Chromium itself logs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000"]

HEAD_SCRIPT = """<script>window.__errors=[];
window.addEventListener('error',function(e){var t=e.target||{};window.__errors.push(
'error: '+(e.message||((t.tagName||'')+' '+String(t.src||t.href||'').slice(0,80))));},true);
(function(){var o=console.error;console.error=function(){window.__errors.push('console.error: '+
Array.prototype.join.call(arguments,' '));o.apply(console,arguments);};})();</script>"""

BODY_SCRIPT = """<script>window.addEventListener('load',function(){var im=[].slice.call(
document.images);var bad=im.filter(function(i){return !(i.complete&&i.naturalWidth>0);})
.map(function(i){return i.alt||String(i.src).slice(0,60);});document.body.setAttribute(
'data-check',JSON.stringify({images:im.length,bad:bad,errors:window.__errors}));});</script>"""


@dataclass
class PageCheck:
    images: int
    broken: list[str]
    errors: list[str]
    console: list[str] = field(default_factory=list)
    """Console lines Chromium logged (CONSOLE messages)."""


def chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(html_file: Path, timeout: float = 120.0) -> PageCheck:
    """Render `html_file` (its folder is the base for relative links) and check it."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH")
    text = html_file.read_text()
    text = text.replace("<head>", "<head>" + HEAD_SCRIPT, 1)
    text = text.replace("</body>", BODY_SCRIPT + "</body>", 1)
    page = html_file.with_name(f".browser-check-{html_file.name}")
    page.write_text(text)
    try:
        with tempfile.TemporaryDirectory(prefix="kmemsim-chromium-") as profile:
            res = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                                  page.resolve().as_uri()], capture_output=True, text=True,
                                 timeout=timeout)
    finally:
        page.unlink(missing_ok=True)
    m = re.search(r"data-check=\"([^\"]*)\"", res.stdout)
    if m is None:
        raise RuntimeError(f"chromium exited {res.returncode} without the check result; "
                           f"stderr: {res.stderr[-2000:]}")
    data = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    return PageCheck(data["images"], data["bad"], data["errors"], console)
