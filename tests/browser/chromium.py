"""Debian's Chromium as the browser tests and the browser benchmarks launch it (no network, no GPU, no updates)."""

from __future__ import annotations

import os

CHROMIUM = os.environ.get("HEATWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
