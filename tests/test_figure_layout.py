"""The static SVG figure and the widget's canvas figure lay out alike.

tests/figure_layout_cases.py lays out a set of matrices with heatwidget/_figure.py and writes what the SVG shows to
js/test/figure_layout_cases.json; js/test/figure_parity.test.ts (vitest, in CI) lays the same inputs out with
figure.ts and requires the same texts at the same places. This test keeps the file in step with _figure.py.
"""

from __future__ import annotations

import figure_layout_cases as cases


def test_fixture_is_what_the_python_figure_lays_out_now() -> None:
    assert cases.FIXTURE.read_text(encoding="utf-8") == cases.dumps(cases.build()), (
        "js/test/figure_layout_cases.json is stale: run `python tests/figure_layout_cases.py` and commit it"
    )


def test_cases_cover_thinning_rotation_log_nan_and_long_labels() -> None:
    by_name = {c["name"]: c for c in cases.build()["cases"]}
    texts = {name: [t["text"] for t in c["expected"]["texts"]] for name, c in by_name.items()}
    large = by_name["large, thinned"]
    assert len(large["expected"]["texts"]) < (large["rows"] + large["cols"]) / 4  # labels thinned
    assert any(t["angle"] == -45 for t in large["expected"]["texts"])  # column labels rotated
    assert "KL · log scale" in texts["log scale"] and by_name["log scale"]["expected"]["norm"]["mode"] == "log"
    assert "n/a" in texts["NaN cells"]
    assert any(t.endswith("…") for t in texts["long labels"]) and "tab⇥here" in texts["long labels"]
    diverging = by_name["negative, diverging"]["expected"]["norm"]
    assert diverging["mode"] == "diverging" and diverging["lo"] == -diverging["hi"]
    assert by_name["pooled for the static image"]["rows"] < 1000
    assert "an unlabelled long name" not in texts["margin settles to the labels shown"]
