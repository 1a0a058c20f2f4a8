"""Click → detail pixels in a JupyterLab explorer: the time from a real mouse click on a heatmap cell until the
explorer's detail area shows the new drill-down with its charts drawn, on screen (issue 18).

`time_click` arms the page (tags the parts of the view the live detail displays as stale, listens for the click on
the heatmap), clicks with the real mouse, and waits until the displayed view is another one (newly built, or a kept
view of a recent cell displayed again: heatwidget/explorer.py), every bqplot chart in it has drawn a mark, and one
more frame has been produced. Used by tests/browser/test_click_lab.py and
benchmarks/bench_click_lab.py.
"""

from __future__ import annotations

from typing import Any

from heatmap_page import cell_center, page_point

# t0: the click reaching the heatmap's overlay (capture listener, before the view's own handler). widgetsMs: the
# displayed view is another one (the kernel answered; the widget manager built or re-displayed it). ms: besides, each
# bqplot figure has drawn bars, lines or dots, and the frame after that (rAF + task) is produced. firstCommOpenMs /
# lastCommMs / commOpens: the kernel's widget messages after the click (where the time goes: kernel or page).
ARM_JS = """
() => {
  window.__hwClick = undefined;
  const ex = document.querySelector('.heatwidget-explorer');
  // The live drill-down's slot of the explorer's detail Stack (precomputed views sit beside it). Its children are
  // boxes, only one displayed (the others keep views of recent cells); the displayed box's children are the view.
  const detail = ex.querySelector('.heatwidget-detail .hw-live-detail') || ex.querySelector('.heatwidget-detail');
  const shown = () => Array.from(detail.children).filter((b) => b.getClientRects().length > 0)
    .flatMap((b) => Array.from(b.children));
  for (const el of detail.querySelectorAll('[data-hw-stale]')) delete el.dataset.hwStale;
  for (const el of shown()) el.dataset.hwStale = '1';
  const overlay = ex.querySelector('.heatwidget canvas.hw-overlay');
  const replaced = () => {
    const kids = shown();
    return kids.length > 0 && !kids.some((k) => k.dataset.hwStale);
  };
  const drawn = () => shown().flatMap((k) => Array.from(k.querySelectorAll('.bqplot')))
    .every((c) => c.querySelector('rect.bar, path.line, path.dot, .dot') !== null);
  // Kernel messages after the click: when the first new widget (comm_open) arrived, how many, and the last one.
  const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
  const comms = { first: null, last: null, opened: 0 };
  let t0 = null;
  const onIopub = (_k, msg) => {
    if (t0 === null || window.__hwClick !== undefined) return;
    const t = msg.header.msg_type;
    if (t !== 'comm_open' && t !== 'comm_msg') return;
    const now = performance.now() - t0;
    if (t === 'comm_open') { comms.opened++; if (comms.first === null) comms.first = now; }
    comms.last = now;
  };
  kernel?.iopubMessage.connect(onIopub);
  overlay.addEventListener('click', () => {
    t0 = performance.now();
    let widgetsMs = null;
    const poll = () => {
      if (widgetsMs === null && replaced()) widgetsMs = performance.now() - t0;
      if (widgetsMs === null || !drawn()) { requestAnimationFrame(poll); return; }
      requestAnimationFrame(() => setTimeout(() => {
        kernel?.iopubMessage.disconnect(onIopub);
        const view = shown();
        window.__hwClick = { ms: performance.now() - t0, widgetsMs,
                             charts: view.reduce((n, k) => n + k.querySelectorAll('.bqplot').length, 0),
                             firstCommOpenMs: comms.first, lastCommMs: comms.last, commOpens: comms.opened,
                             text: view.map((k) => k.innerText).join(' ').slice(0, 200) };
      }, 0));
    };
    poll();
  }, { once: true, capture: true });
}
"""


def explorer_root(page: Any) -> Any:
    root = page.locator(".heatwidget-explorer .heatwidget").first
    root.wait_for(state="visible", timeout=60_000)
    page.wait_for_function(
        "document.querySelector('.heatwidget-explorer .heatwidget')?.dataset.paints >= 1", timeout=30_000
    )
    return root


def time_click(page: Any, root: Any, r: int, c: int, timeout_s: float = 120) -> dict:
    """Click cell (r, c) of the explorer's heatmap; {"ms", "widgetsMs", "charts", "text"} once the new detail is on
    screen."""
    x, y = page_point(root, *cell_center(root, r, c))
    page.evaluate(ARM_JS)
    page.mouse.click(x, y)
    page.wait_for_function("window.__hwClick !== undefined", timeout=timeout_s * 1000, polling="raf")
    return page.evaluate("window.__hwClick")
