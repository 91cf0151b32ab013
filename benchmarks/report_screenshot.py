"""Render a fixture bundle's ``prunectl report`` and screenshot it in real headless Chromium.

    .venv/bin/python benchmarks/report_screenshot.py [docs/results/bench/report_screenshot.png]

Chromium comes from the OS (``apt-get install -y chromium``); it is not a Python dependency
and CI does not install it, so the matching test skips when it is missing. The page is
opened from a file:// URL with networking features off: a self-contained page must render
without fetching anything.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
EXAMPLE_HISTORY = [  # an illustrative history.json: the page's accuracy-vs-size section
    {"step": 0, "params": 701466, "macs": 35049472, "accuracy": 0.931, "note": "original"},
    {"step": 1, "params": 346626, "macs": 17457152, "accuracy": 0.927, "rate": 0.3},
    {"step": 2, "params": 176402, "macs": 8870912, "accuracy": 0.915, "rate": 0.5, "note": "fine-tuned"},
]


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def chromium_screenshot(page: Path, png: Path, width: int = 1200, height: int = 1600, timeout: float = 120) -> None:
    """Screenshot ``page`` (an HTML file) to ``png`` with headless Chromium; raises on failure."""
    browser = find_chromium()
    if browser is None:
        raise FileNotFoundError("no chromium on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                   "--hide-scrollbars", page.resolve().as_uri()]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium wrote no screenshot to {png}")


def make_example_bundle(directory: Path) -> Path:
    """Prune the CIFAR ResNet18 fixture at rate 0.5 with ONNX into ``directory/bundle``."""
    sys.path.insert(0, str(ROOT))
    import prunectl
    from fixtures.make_checkpoints import make_all

    checkpoints = make_all(directory / "ckpts")
    bundle = directory / "bundle"
    prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(
        spec=ROOT / "fixtures/specs/resnet18.json", rate=0.5, output=bundle, onnx=True))
    (bundle / "history.json").write_text(json.dumps(EXAMPLE_HISTORY, indent=1))
    return bundle


def main() -> None:
    from prunectl.views.html_report import write_report

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/results/bench/report_screenshot.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_example_bundle(Path(tmp))
        written = write_report(bundle)
        chromium_screenshot(written.html, target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
