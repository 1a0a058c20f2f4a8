"""Bad input at every public entry point: one clear sentence naming what is wrong (and which item of a list),
never a silently wrong result or an internal error. One test (or parametrised family) per kind of issue 13."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import traitlets

import heatwidget as hw
from heatwidget.matrix import HeatMatrixFileError
from heatwidget.probing.probe import split_indices

PROMPT = "Velmora is"
SUBJECT = "Velmora"


@pytest.fixture(scope="module")
def lm() -> hw.LM:
    return hw.demo_model()


def hidden(lm: hw.LM) -> int:
    return int(lm.anatomy.embed.weight.shape[1])


# ---- lists: the message names the offending item, not item 0 of some inner batch ------------------------------

LIST_CASES = {
    "ablation prompts": (
        lambda lm: hw.ablation_kl(lm, [PROMPT, "  "], max_new_tokens=1, layers=[0]),
        ValueError,
        r"prompt 1 of 2 is empty",
    ),
    "ablation prompt too long": (
        lambda lm: hw.ablation_kl(lm, [PROMPT, " ".join(["the"] * 400)], layers=[0]),
        ValueError,
        r"^prompt 1: ",
    ),
    "knockout prompts": (
        lambda lm: hw.knockout_js(lm, [PROMPT, ""], SUBJECT, layers=[0]),
        ValueError,
        r"prompt 1 of 2 is empty",
    ),
    "knockout subjects empty": (
        lambda lm: hw.knockout_js(lm, [PROMPT, PROMPT], [SUBJECT, ""], layers=[0]),
        ValueError,
        r"subject 1 of 2 is empty",
    ),
    "knockout subject absent": (
        lambda lm: hw.knockout_js(lm, [PROMPT, "Ostrand was"], SUBJECT, layers=[0]),
        ValueError,
        r"^prompt 1: subject 'Velmora' does not occur",
    ),
    "knockout subject type": (
        lambda lm: hw.knockout_js(lm, [PROMPT, PROMPT], [SUBJECT, 3], layers=[0]),
        TypeError,
        r"subject 1 has type int, not str",
    ),
    "answer questions": (
        lambda lm: hw.answer(lm, ["Q: a? A:", ""], ["x", "y"]),
        ValueError,
        r"question 1 of 2 is empty",
    ),
    "answer golds": (lambda lm: hw.answer(lm, ["Q: a? A:", "Q: b? A:"], ["x", ""]), ValueError, r"gold 1 is empty"),
    "answer question type": (
        lambda lm: hw.answer(lm, ["Q: a? A:", 3], ["x", "y"]),
        TypeError,
        r"question 1 has type int, not str",
    ),
    "encode prompt type": (lambda lm: lm.encode(["some text", 3]), TypeError, r"prompt 1 has type int, not str"),
    "encode not a list": (lambda lm: lm.encode(3), TypeError, r"prompts must be a str or a list of str, got int"),
    "answer dicts": (
        lambda lm: hw.answer(lm, [{"question": "Q: a? A:", "gold": "x"}, {"gold": "y"}]),
        ValueError,
        r"question dict 1 has no 'question' key",
    ),
    "module_stats texts": (
        lambda lm: hw.module_stats(lm, "grad", texts=["some text", ""]),
        ValueError,
        r"text 1 of 2 is empty",
    ),
    "single prompt is not 'prompt 0'": (lambda lm: hw.logit_lens(lm, "   "), ValueError, r"^the prompt is empty"),
}


@pytest.mark.parametrize("case", list(LIST_CASES))
def test_list_errors_name_the_offending_item(lm, case):
    call, exc, pattern = LIST_CASES[case]
    with pytest.raises(exc, match=pattern) as info:
        call(lm)
    assert "\n" not in str(info.value)


# ---- callable interventions --------------------------------------------------------------------------------------


def shrink(h, x):
    return h[..., :3]


def give_none(h, x):
    return None


def poison(h, x):
    return h * float("nan")


@pytest.mark.parametrize(
    "fn, exc, pattern",
    [
        (
            shrink,
            ValueError,
            r"intervention 'shrink' .* at layer 1 returned shape \[1, \d+, 3\] for a block output of "
            r"shape \[1, \d+, 192\]",
        ),
        (
            give_none,
            TypeError,
            r"intervention 'give_none' .* returned a value of type NoneType; it must return a torch tensor",
        ),
        (poison, ValueError, r"intervention 'poison' .* returned NaN or inf"),
    ],
)
def test_callable_intervention_result_is_checked(lm, fn, exc, pattern):
    with pytest.raises(exc, match=pattern):
        hw.ablation_kl(lm, PROMPT, max_new_tokens=2, layers=[1], intervention=fn)


def test_callable_intervention_may_broadcast(lm):
    """A result that broadcasts to the block output (a [d] vector added) is accepted, and equals hw.Steer."""
    v = torch.linspace(-1, 1, hidden(lm))
    a = hw.ablation_kl(lm, PROMPT, max_new_tokens=2, layers=[1, 3], intervention=lambda h, x: h + v)
    b = hw.ablation_kl(lm, PROMPT, max_new_tokens=2, layers=[1, 3], intervention=hw.Steer(v))
    np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-7)


# ---- token ids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids, exc, pattern",
    [
        ([1, 2, 10**6], ValueError, r"token id 2 of the prompt is 1000000, outside the vocabulary \[0, 1024\)"),
        ([1, -2, 3], ValueError, r"token id 1 of the prompt is -2, outside the vocabulary"),
        ([1.7, 2.2], TypeError, r"token id 0 of the prompt is 1.7 \(float\)"),
        (torch.tensor([1.5, 2.0]), TypeError, r"token id 0 of the prompt is 1.5 \(float\)"),
        (np.array([3.0, 4.0]), TypeError, r"token id 0 of the prompt is 3.0 \(float\)"),
        ([True, False], TypeError, r"token id 0 of the prompt is True \(bool\)"),
        (["Velmora", "is"], TypeError, r"list of str where token ids \(ints\) were expected"),
        ([[1, 2], [3, 4]], ValueError, r"1-D sequence of token ids, got shape \(2, 2\)"),
        (None, TypeError, r"prompt must be a str or a sequence of token ids, got NoneType"),
    ],
)
def test_token_ids_are_checked(lm, ids, exc, pattern):
    with pytest.raises(exc, match=pattern):
        hw.logit_lens(lm, ids)


def test_valid_token_ids_in_any_integer_container(lm):
    ids = lm.encode(PROMPT)["input_ids"][0]
    ref = hw.logit_lens(lm, PROMPT).values
    for given in (ids, ids.tolist(), ids.numpy(), ids[None]):
        np.testing.assert_array_equal(hw.logit_lens(lm, given).values, ref)


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda lm: hw.logit_lens(lm, PROMPT, layers=[0.5]), TypeError, r"layer must be an int, got 0.5"),
        # operator.index(True) is 1: a bool must not select layer 1 (nor a bool tensor, nor a bool top_k)
        (lambda lm: hw.logit_lens(lm, PROMPT, layers=[True]), TypeError, r"layer must be an int, got a bool \(True\)"),
        (lambda lm: hw.logit_lens(lm, PROMPT, layers=True), TypeError, r"layer must be an int, got a bool \(True\)"),
        (
            lambda lm: hw.ablation_kl(lm, PROMPT, layers=[0, torch.tensor(True)]),
            TypeError,
            r"layer must be an int, got a bool",
        ),
        (
            lambda lm: hw.logit_lens(lm, PROMPT, top_k=torch.tensor(True)),
            TypeError,
            r"top_k must be an int, got a bool",
        ),
        (lambda lm: hw.logit_lens(lm, PROMPT, top_k=0), ValueError, r"top_k must be at least 1"),
        (lambda lm: hw.logit_lens(lm, PROMPT, memory_budget_mb=-1), ValueError, r"memory_budget_mb must be > 0"),
        (
            lambda lm: hw.ablation_kl(lm, PROMPT, intervention=hw.Steer(np.ones(192), float("nan"))),
            ValueError,
            r"Steer alpha must be a finite number",
        ),
        (lambda lm: hw.knockout_js(lm, PROMPT, None), TypeError, r"subjects must be a str or a list of str"),
        (lambda lm: hw.knockout_js(lm, PROMPT, SUBJECT, noise_scale="3"), TypeError, r"noise_scale must be a number"),
        (lambda lm: hw.knockout_js(lm, PROMPT, SUBJECT, seed="x"), TypeError, r"seed must be an int"),
        (lambda lm: hw.HeatMatrix(np.ones((1, 1)), meta=[1, 2]), TypeError, r"meta must be a dict"),
        (
            lambda lm: hw.answer(lm, ["Q: a? A:"], ["zzzz"], extractor=lambda q, text: 3),
            TypeError,
            r"extractor returned a value of type int for question 0, not a str or None",
        ),
    ],
)
def test_other_arguments_are_checked(lm, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(lm)


# ---- probes: the magnitude of the features does not matter ----------------------------------------------------


def _features(sep: float, n: int = 200, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    X = rng.normal(size=(n, 1, 2, d)).astype(np.float32)
    X[:, 0, :, 0] += sep * (2 * y - 1)[:, None]
    return X, y


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("scale", [1e20, 1e30, 2.0**40])
def test_probe_auc_does_not_depend_on_feature_magnitude(solver, scale):
    """The issue's case: separable features scaled by 1e20 gave AUC 0.15 (sklearn: 1.0)."""
    X, y = _features(4.0)
    base = hw.probe_auc(X, y, solver=solver)
    big = hw.probe_auc((X.astype(np.float64) * scale).astype(np.float32), y, solver=solver)
    np.testing.assert_allclose(big.values, base.values, atol=1e-3)
    assert big.meta["solver"]["all_converged"]


@pytest.mark.parametrize("solver", ["lbfgs", "newton"])
@pytest.mark.parametrize("sep", [4.0, 0.5], ids=["separable", "overlapping"])
@pytest.mark.parametrize("scale", [1e20, 2.0**-30, 1e3])
def test_probe_on_scaled_features_is_the_exactly_rescaled_problem(solver, sep, scale):
    """C keeps sklearn's meaning (a penalty on the raw features' weights), so C=1 on s·X is C=s² on X: the solver
    reaches that optimum at any magnitude float32 holds (1e3 takes the unscaled path, the others the rescaled)."""
    X, y = _features(sep)
    m = hw.probe_auc((X.astype(np.float64) * scale).astype(np.float32), y, solver=solver)
    ref = hw.probe_auc(X, y, C=scale**2, solver=solver)
    np.testing.assert_allclose(m.values, ref.values, atol=1e-3)
    if sep < 1:  # separable data with a vanishing penalty has no finite optimum: only its AUC is defined
        np.testing.assert_allclose(m.meta["coef"] * scale, ref.meta["coef"], rtol=1e-2, atol=1e-3)


def test_probe_on_huge_features_matches_sklearn_and_is_the_exact_rescaled_problem():
    """The issue's numbers: sklearn gives 1.0 on 1e20-scaled separable features; so do we (was 0.15 / 0.5)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    X, y = _features(4.0)
    s = 1e20
    Xs = (X.astype(np.float64) * s).astype(np.float32)
    m = hw.probe_auc(Xs, y)
    train, test = split_indices(len(y), 0.2, 0)
    clf = LogisticRegression(C=1.0, max_iter=10000).fit(Xs[train, 0, 0], y[train])
    sk = roc_auc_score(y[test], clf.decision_function(Xs[test, 0, 0]))
    assert sk == 1.0 and m.values[0, 0] == pytest.approx(sk, abs=1e-3)  # was 0.15 / 0.5 before rescaling


def test_probe_on_tiny_features_says_why_every_score_is_alike():
    X, y = _features(4.0)
    m = hw.probe_auc(X * np.float32(1e-20), y)
    assert np.all(m.values == 0.5)  # sklearn's C=1 on features this small: every weight is 0
    assert any("outweighs features this small" in n for n in m.meta["notes"])
    assert hw.probe_auc(X, y).meta["notes"] == []


@pytest.mark.parametrize(
    "kw, exc, pattern",
    [
        ({"max_iter": 0}, ValueError, r"max_iter must be at least 1"),
        ({"tol": -1.0}, ValueError, r"tol must be at least 0"),
        ({"min_per_class": 0}, ValueError, r"min_per_class must be at least 1"),
    ],
)
def test_probe_solver_options_are_checked(kw, exc, pattern):
    X, y = _features(4.0)
    with pytest.raises(exc, match=pattern):
        hw.probe_auc(X, y, **kw)


@pytest.mark.parametrize(
    "bad, pattern", [(2, r"label 7 is 2"), (np.nan, r"label 7 is nan"), (None, r"label 7 is None")]
)
def test_probe_labels_name_the_first_bad_one(bad, pattern):
    X, y = _features(4.0)
    labels = y.astype(object)
    labels[7] = bad
    with pytest.raises(ValueError, match=r"labels must be 0/1 or bool \(1 = correct\); " + pattern):
        hw.probe_auc(X, labels)


def test_probe_features_with_an_empty_axis():
    with pytest.raises(ValueError, match=r"have an empty axis"):
        hw.probe_auc(np.zeros((40, 1, 1, 0), np.float32), np.arange(40) % 2)


# ---- non-finite weights are named ----------------------------------------------------------------------------------


def test_non_finite_weights_are_named_in_notes_and_widget(lm):
    bad = hw.demo_model()
    with torch.no_grad():
        bad.anatomy.attn[1].q_proj.weight[0, 0] = float("nan")
        bad.anatomy.mlp[2].up_proj.weight[3, 1] = float("inf")
    m = hw.weight_change(lm, bad)  # an inf weight used to fail with "HeatMatrix values contain ±inf"
    q, up = hw.MODULES.index("attn.q"), hw.MODULES.index("mlp.up")
    assert np.isnan(m.values[1, q]) and np.isnan(m.values[2, up])
    assert np.isfinite(m.values[0]).all() and np.isfinite(m.values[1, up])
    notes = m.meta["notes"]
    assert any(
        n.startswith("b: layer 1 attn.q (model.layers.1.self_attn.q_proj.weight") and "1 NaN value" in n for n in notes
    ), notes
    assert any(
        n.startswith("b: layer 2 mlp.up (model.layers.2.mlp.up_proj.weight") and "1 ±inf value" in n for n in notes
    ), notes
    w = hw.Heatmap(m)
    assert [n for n in w.notes if "attn.q" in n or "mlp.up" in n] == [n for n in notes if "layer" in n]
    assert "layer 1 attn.q" in w.to_svg()

    s = hw.module_stats(bad, "norm")
    assert np.isnan(s.values[1, q]) and np.isnan(s.values[2, up])
    assert any("layer 2 mlp.up" in n and "±inf" in n for n in s.meta["notes"])


# ---- HeatMatrix files ----------------------------------------------------------------------------------------------


class _Boom:
    """Unpickling this would create `marker`: proves that loading never unpickles."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_save_refuses_what_it_cannot_store_without_pickling(tmp_path):
    m = hw.HeatMatrix(np.ones((2, 2)), meta={"options": {"objs": np.array([{"a": 1}, None], dtype=object)}})
    with pytest.raises(TypeError, match=r"meta\['options'\]\['objs'\] is a numpy array of Python objects"):
        m.save(tmp_path / "a.npz")
    loop: dict = {"x": 1}
    loop["self"] = loop
    with pytest.raises(ValueError, match=r"meta\['loop'\]\['self'\] refers back"):
        hw.HeatMatrix(np.ones((2, 2)), meta={"loop": loop}).save(tmp_path / "b.npz")
    shared = [1, 2]  # the same list twice is not a cycle
    back = hw.HeatMatrix.load(hw.HeatMatrix(np.ones((2, 2)), meta={"a": shared, "b": shared}).save(tmp_path / "c"))
    assert back.meta == {"a": [1, 2], "b": [1, 2]}
    assert not list(tmp_path.glob("a.npz")) and not list(tmp_path.glob("b.npz"))


def _header(**meta) -> str:
    return json.dumps(
        dict(rows=["a", "b"], cols=["c", "d"], title="", row_title="", col_title="", metric="", meta=meta, format=1)
    )


def _write(kind: str, path: Path) -> None:
    ones = np.ones((2, 2), np.float32)
    if kind == "text":
        path.write_text("hello, I am not numpy")
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), ones)
        path.with_suffix(".npy").rename(path)
    elif kind == "no header":
        np.savez(path, values=ones)
    elif kind == "no values":
        np.savez(path, header=np.array(_header()))
    elif kind == "header not json":
        np.savez(path, values=ones, header=np.array("{not json"))
    elif kind == "header incomplete":
        np.savez(path, values=ones, header=np.array(json.dumps({"rows": ["a", "b"]})))
    elif kind == "missing meta array":
        np.savez(path, values=ones, header=np.array(_header(x={"__array__": "0"})))
    elif kind == "pickled meta array":
        _Boom.marker = str(path.parent / "unpickled")
        np.savez(
            path, values=ones, header=np.array(_header(x={"__array__": "0"})), meta__0=np.array([_Boom()], dtype=object)
        )
    elif kind == "truncated zip":
        np.savez(path, values=ones, header=np.array(_header()))
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "wrong labels":
        np.savez(path, values=np.ones((3, 2), np.float32), header=np.array(_header()))


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("text", r"is not a HeatMatrix file: HeatMatrix.save writes a numpy .npz \(zip\) archive"),
        ("npy", r"holds a single numpy array, not the .npz archive"),
        ("no header", r"without the 'header' entry"),
        ("no values", r"without the 'values' entry"),
        ("header not json", r"'header' entry that is not the JSON object"),
        ("header incomplete", r"header without 'cols', 'title'"),
        ("missing meta array", r"missing the meta array '0'"),
        (
            "pickled meta array",
            r"entry .meta__0. holds Python objects, which only unpickling could read, and "
            r"HeatMatrix.load never unpickles",
        ),
        ("truncated zip", r"is not a HeatMatrix file"),
        ("wrong labels", r"holds an invalid matrix: 2 row labels for 3 rows"),
    ],
)
def test_load_answers_every_malformed_file_in_one_sentence(tmp_path, kind, pattern):
    path = tmp_path / "m.npz"
    _write(kind, path)
    with pytest.raises(HeatMatrixFileError, match=pattern) as info:
        hw.HeatMatrix.load(path)
    assert "\n" not in str(info.value) and "allow_pickle" not in str(info.value)
    assert not (tmp_path / "unpickled").exists()


def test_load_of_a_missing_path_or_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no HeatMatrix file at .*nope.npz"):
        hw.HeatMatrix.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match=r"\(it is a directory\)"):
        hw.HeatMatrix.load(tmp_path)


# ---- the Heatmap widget ----------------------------------------------------------------------------------------


def test_heatmap_colour_range_must_not_be_empty_or_reversed():
    m = hw.HeatMatrix([[0.0, 1.0], [2.0, 3.0]])
    for lo, hi in ((2, 1), (1, 1)):
        with pytest.raises(ValueError, match=r"vmin \(\d\) must be smaller than vmax"):
            hw.Heatmap(m, vmin=lo, vmax=hi)
    w = hw.Heatmap(m, vmin=0, vmax=1)
    with pytest.raises(traitlets.TraitError, match=r"vmin \(5\) must be smaller than vmax \(1\)"):
        w.vmin = 5
    with pytest.raises(traitlets.TraitError, match=r"vmax \(0\) must be larger than vmin \(0\)"):
        w.vmax = 0
    w.vmax = 10
    w.vmin = 5
    assert (w.vmin, w.vmax) == (5, 10)
    # An analysis's suggested range gives way to an explicit bound on the other side instead of failing.
    p = hw.HeatMatrix([[0.6, 0.9]], meta={"vmin": 0.5, "vmax": 1.0})
    assert (hw.Heatmap(p, vmax=0.4).vmin, hw.Heatmap(p, vmin=1.5).vmax) == (None, None)


def test_log_scale_says_how_many_cells_it_cannot_show():
    m = hw.HeatMatrix([[0.0, 1.0, np.nan], [-2.0, 10.0, 100.0]])
    w = hw.Heatmap(m, log=True)
    assert w.notes == [
        "log scale: 2 of 5 cells are zero or negative and cannot be shown on it (drawn in the lowest colour)"
    ]
    assert "2 of 5 cells are zero or negative" in w.to_svg()
    w.log = False
    assert w.notes == []
    w.log = True
    w.matrix = hw.HeatMatrix([[1.0, 2.0]])
    assert w.notes == []


def test_heatmap_shows_the_analysis_notes_briefly():
    notes = [f"note {i}" for i in range(6)] + ["x" * 500]
    w = hw.Heatmap(hw.HeatMatrix([[1.0]], meta={"notes": notes}))
    assert w.notes[:4] == notes[:4] and w.notes[4] == "… and 3 more notes in meta['notes']"
    assert max(len(n) for n in hw.Heatmap(hw.HeatMatrix([[1.0]], meta={"notes": notes[-1:]})).notes) == 200


# ---- explorer ------------------------------------------------------------------------------------------------------


def test_explorer_select_out_of_range_names_the_range():
    ex = hw.explore(hw.HeatMatrix(np.ones((2, 3))))
    with pytest.raises(IndexError, match=r"row 5 is out of range: this matrix has 2 rows \(positions 0 … 1"):
        ex.select(5, 0)
    with pytest.raises(IndexError, match=r"col -4 is out of range: this matrix has 3 cols"):
        ex.select(0, -4)
    d = ex.select(-1, "2").result(timeout=30)  # labels and negative positions, as m.drill takes
    assert (d.row, d.col) == (1, 2)


# ---- the command line ------------------------------------------------------------------------------------------


@pytest.fixture
def notebooks(tmp_path, monkeypatch) -> Path:
    import nbformat

    (tmp_path / "data.json").write_text('{"a": 1}')
    (tmp_path / "broken.ipynb").write_text("not json at all")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "ok.ipynb")
    (tmp_path / "outdir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["export", "data.json", "out.html"], r"^heatwidget export: data.json is not a valid Jupyter notebook \("),
        (
            ["export", "broken.ipynb", "out.html"],
            r"^heatwidget export: broken.ipynb is not a Jupyter notebook: it is "
            r"not JSON$",
        ),
        (["export", "ok.ipynb", "outdir"], r"^heatwidget export: outdir is a directory: give a file path \(e.g. "),
        (["export", "missing.ipynb", "out.html"], r"^heatwidget export: no such notebook: missing.ipynb$"),
        (["demo", "--html", "outdir"], r"^heatwidget demo: "),
    ],
)
def test_cli_user_errors_are_one_line_with_exit_code_2(notebooks, capsys, args, pattern):
    from heatwidget.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err


def test_cli_process_exit_code_and_stderr(notebooks):
    """The real command: exit status 2, one line on stderr, no traceback; a good export still works."""
    from heatwidget.cli import main

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    p = subprocess.run(
        [sys.executable, "-m", "heatwidget.cli", "export", "broken.ipynb", "out.html"],
        capture_output=True,
        text=True,
        env=env,
        cwd=notebooks,
        timeout=300,
    )
    assert (
        p.returncode == 2 and p.stderr == "heatwidget export: broken.ipynb is not a Jupyter notebook: it is not JSON\n"
    ), p.stderr
    assert main(["export", "ok.ipynb", "out.html"]) == 0 and (notebooks / "out.html").stat().st_size > 0
