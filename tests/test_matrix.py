"""HeatMatrix: validation, views, lossless persistence, drill plumbing."""

import math

import numpy as np
import pytest

import heatwidget as hw


def make(**kw):
    v = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    v[1, 2] = np.nan
    return hw.HeatMatrix(
        v,
        ["L0", "L1"],
        ["Gen0", "Gen1", "Gen2"],
        title="KL",
        row_title="Layer",
        col_title="Generated token",
        metric="KL (nats)",
        **kw,
    )


def test_basic_attributes_and_dtype():
    m = make(meta={"model": "x"})
    assert m.values.dtype == np.float32 and m.shape == (2, 3)
    assert m.rows == ["L0", "L1"] and m.cols[2] == "Gen2"
    assert m.meta["model"] == "x"
    assert "2×3" in repr(m)


def test_values_are_copied_not_aliased():
    v = np.zeros((2, 2), dtype=np.float32)
    m = hw.HeatMatrix(v)
    v[0, 0] = 5
    assert m.values[0, 0] == 0
    assert m.rows == ["0", "1"] and m.cols == ["0", "1"]


def test_torch_tensor_input():
    import torch

    m = hw.HeatMatrix(torch.ones(2, 3, dtype=torch.float64, requires_grad=True))
    assert m.values.dtype == np.float32


@pytest.mark.parametrize(
    "values,rows,cols,err,match",
    [
        (np.zeros(3), None, None, ValueError, "2-D"),
        (np.zeros((2, 2, 2)), None, None, ValueError, "2-D"),
        (np.zeros((2, 3)), ["a"], None, ValueError, "1 row labels for 2 rows"),
        (np.zeros((2, 3)), None, ["a", "b"], ValueError, "2 col labels for 3 cols"),
        (np.full((2, 2), np.nan), None, None, ValueError, "all NaN"),
        (np.array([[1.0, np.inf]]), None, None, ValueError, "inf"),
        (np.zeros((0, 3)), None, None, ValueError, "empty"),
        (np.zeros((2, 2)), "ab", None, TypeError, "single string"),
    ],
)
def test_bad_input_is_refused_clearly(values, rows, cols, err, match):
    with pytest.raises(err, match=match):
        hw.HeatMatrix(values, rows, cols)


def test_huge_matrix_is_refused():
    with pytest.raises(ValueError, match="larger than"):
        hw.HeatMatrix(np.broadcast_to(np.float32(0), (10_000, 10_000)))


def test_nan_cells_allowed():
    m = make()
    assert math.isnan(m.values[1, 2])
    assert math.isnan(m.drill(1, 2).value)


def test_transpose():
    m = make()
    t = m.T
    assert t.shape == (3, 2) and t.rows == m.cols and t.cols == m.rows
    assert t.row_title == "Generated token" and t.col_title == "Layer"
    np.testing.assert_array_equal(t.values, m.values.T)


def test_to_pandas():
    df = make().to_pandas()
    assert list(df.index) == ["L0", "L1"] and list(df.columns) == ["Gen0", "Gen1", "Gen2"]
    assert df.index.name == "Layer" and df.columns.name == "Generated token"
    assert df.loc["L1", "Gen0"] == pytest.approx(3 / 7)
    assert df.attrs["metric"] == "KL (nats)"


def test_save_load_is_lossless(tmp_path):
    meta = {
        "model": "demo",
        "seed": 0,
        "options": {"layers": [0, 2], "window": 5, "alpha": 0.5, "t": (1, 2)},
        "train_idx": np.array([3, 1, 2], dtype=np.int64),
        "scores": np.random.rand(4, 2).astype(np.float64),
        "nan": float("nan"),
        "obj": object(),
    }
    m = make(meta=meta)
    p = m.save(tmp_path / "m")
    assert p.suffix == ".npz"
    back = hw.HeatMatrix.load(p)
    assert back == m
    assert back.values.tobytes() == m.values.tobytes()  # bit-exact, NaN included
    assert back.meta["options"] == meta["options"] and back.meta["options"]["t"] == (1, 2)
    np.testing.assert_array_equal(back.meta["train_idx"], meta["train_idx"])
    assert back.meta["train_idx"].dtype == np.int64
    np.testing.assert_array_equal(back.meta["scores"], meta["scores"])
    assert math.isnan(back.meta["nan"])
    assert back.meta["obj"].startswith("<object")


def test_drill_default_and_custom():
    m = make()
    d = m.drill("L1", "Gen0")
    assert (d.row, d.col, d.row_label, d.col_label) == (1, 0, "L1", "Gen0")
    assert d.value == pytest.approx(3 / 7)

    def drill(mat, r, c):
        det = mat.cell(r, c)
        det.charts.append(hw.Chart("top-k", "bar", [hw.Series("clean", ["a", "b"], [0.6, 0.4])]))
        det.reruns["double"] = lambda: hw.HeatMatrix(mat.values * 2)
        return det

    m2 = make(drill=drill)
    d2 = m2.drill(0, -1)
    assert d2.col == 2 and d2.charts[0].series[0].y == [0.6, 0.4]
    assert d2.reruns["double"]().values[0, 1] == pytest.approx(2 / 7)
    # the transpose drills the same cell
    assert m2.T.drill(2, 0).charts[0].title == "top-k" and m2.T.drill(2, 0).col == 2


def test_drill_bad_keys():
    m = make()
    with pytest.raises(IndexError, match="out of range"):
        m.drill(5, 0)
    with pytest.raises(KeyError, match="no row labelled"):
        m.drill("L9", 0)
    with pytest.raises(TypeError):
        m.drill(0.5, 0)
    with pytest.raises(ValueError, match="kind"):
        hw.Chart("x", "pie", [])
