"""ablation_kl, knockout_js and logit_lens on the analysis contract: declared options, public per-item functions
whose results are plain data, execution settings from hw.config (the old keywords still work), the
explorer's controls built from the declarations, and the package's import boundaries."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.divergence.ablation import ABLATION, INTERVENTIONS, MODES, AblationResult, ablate_prompt
from heatwidget.divergence.knockout import CORRUPTIONS, KNOCKOUT, NOISE_REFS, KnockoutItem, knockout_prompt
from heatwidget.divergence.lens import LENS, LENS_METRICS, lens_prompt

PROMPT = "the capital of Velmora is"


@pytest.fixture(scope="module")
def lm(tiny_dir):
    from tiny_models import tiny_tokenizer

    loaded = hw.load(tiny_dir("llama", initializer_range=0.2, num_hidden_layers=4))
    return hw.LM.wrap(loaded.model, tiny_tokenizer(), name=loaded.name)


def _tensors_in(x, depth=0) -> list[str]:
    """Paths of torch tensors anywhere inside a result (a result must travel back from a Ray worker as data)."""
    if isinstance(x, torch.Tensor):
        return ["<tensor>"]
    if depth > 4:
        return []
    items = (
        vars(x).items()
        if hasattr(x, "__dataclass_fields__")
        else x.items()
        if isinstance(x, dict)
        else enumerate(x)
        if isinstance(x, (list, tuple))
        else []
    )
    return [f"{k}.{p}" for k, v in items for p in _tensors_in(v, depth + 1)]


def test_options_come_from_the_modules_constants():
    assert ABLATION.option("intervention").choices == INTERVENTIONS and ABLATION.option("mode").choices == MODES
    assert KNOCKOUT.option("corruption").choices == CORRUPTIONS and KNOCKOUT.option("noise_ref").choices == NOISE_REFS
    assert LENS.option("metric").choices == LENS_METRICS
    spec = ABLATION.option("intervention").spec()
    assert spec["open"] is True and spec["choices"] == list(INTERVENTIONS)  # steering vectors etc. pass to items
    assert KNOCKOUT.option("window").spec()["min"] == 1 and KNOCKOUT.option("noise_scale").spec()["kind"] == "float"


def test_per_item_functions_return_plain_data_equal_to_the_analysis(lm):
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=3, intervention="mean")
    r = ablate_prompt(lm, PROMPT, max_new_tokens=3, intervention="mean")
    assert isinstance(r, AblationResult) and not _tensors_in(r)
    np.testing.assert_array_equal(r.values, m.values)
    assert pickle.loads(pickle.dumps(r)).tokens == m.meta["generated_ids"][0]
    k = knockout_prompt(lm, KnockoutItem(0, PROMPT, "Velmora", 0.5), layers=[0, 2], noise_scale=1.0)
    assert not _tensors_in(k) and k.js.shape == (3, 2)
    lens = lens_prompt(lm, lm.encode(PROMPT)["input_ids"][0].tolist())
    assert not _tensors_in(lens)
    np.testing.assert_array_equal(lens.kl, hw.logit_lens(lm, PROMPT).values)


def test_old_execution_keywords_still_apply(lm):
    ref = hw.ablation_kl(lm, PROMPT, max_new_tokens=2, intervention="zero_attn")
    old = hw.ablation_kl(
        lm, PROMPT, max_new_tokens=2, intervention="zero_attn", memory_budget_mb=1e-6, progress_bar=False
    )
    np.testing.assert_allclose(old.values, ref.values, atol=1e-6)
    seen = []
    import heatwidget.divergence._engine as engine

    real = engine.rows_per_chunk

    def spy(lm_, seq_len, n_pos, budget_mb):
        seen.append(budget_mb)
        return real(lm_, seq_len, n_pos, budget_mb)

    engine.rows_per_chunk = spy
    try:
        with hw.config(memory_budget_mb=7.0):
            hw.knockout_js(lm, PROMPT, "Velmora", layers=[0])
        hw.knockout_js(lm, PROMPT, "Velmora", layers=[0], config={"memory_budget_mb": 9.0})
        hw.knockout_js(lm, PROMPT, "Velmora", layers=[0], memory_budget_mb=11.0)
        with hw.config(memory_budget_mb=13.0):  # the old keyword over the context's setting
            hw.knockout_js(lm, PROMPT, "Velmora", layers=[0], memory_budget_mb=12.0)
    finally:
        engine.rows_per_chunk = real
    assert seen == [7.0, 9.0, 11.0, 12.0]
    with pytest.raises(ValueError, match="executor must be one of"):
        hw.knockout_js(lm, PROMPT, "Velmora", config={"executor": "dask"})


def test_lens_metric_switch_reuses_the_forward(lm):
    m = hw.logit_lens(lm, PROMPT)
    calls = []
    handle = lm.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        p = m.recompute(metric="prob")
    finally:
        handle.remove()
    assert not calls  # metric is not a lens_prompt parameter: only the reduce step re-ran
    np.testing.assert_array_equal(p.values, hw.logit_lens(lm, PROMPT, metric="prob").values)
    assert p.meta["options"]["metric"] == "prob" and p.title == "Logit lens (p(top-1))"


def test_explorer_controls_come_from_the_declared_options(lm):
    ex = hw.explore(hw.logit_lens(lm, PROMPT, layers=[2, 0]))
    ctl = {w.description: w for w in ex.controls.children if hasattr(w, "description")}
    assert list(ctl["metric"].options) == list(LENS_METRICS)
    assert isinstance(ctl["top_k"], hw.explorer.W.BoundedIntText) and ctl["top_k"].min == 1
    assert ctl["layers"].value == "2, 0"
    ctl["metric"].value, ctl["top_k"].value = "prob", 3
    ex._rerun_with({k: ctl[k] for k in ("metric", "top_k", "layers")})
    ex.wait(60)
    assert ex.heatmap.matrix.meta["options"]["metric"] == "prob" and ex.heatmap.matrix.meta["options"]["top_k"] == 3
    ex.close()
    ex = hw.explore(hw.ablation_kl(lm, PROMPT, max_new_tokens=2, layers=[1]))
    ctl = {w.description: w for w in ex.controls.children if hasattr(w, "description")}
    assert list(ctl["intervention"].options) == list(INTERVENTIONS) and ctl["prompt"].value == PROMPT
    assert ctl["max_new_tokens"].value == 2 and ctl["mode"].value == "teacher_forced"
    ctl["prompt"].value = "Kelvar is a city in"
    ex._rerun_with({k: ctl[k] for k in ("prompt", "max_new_tokens")})
    ex.wait(60)
    assert ex.heatmap.matrix.meta["options"]["prompt"] == "Kelvar is a city in"
    ex.close()


def test_option_choices_are_derived_and_importable():
    from heatwidget.explorer import OPTION_CHOICES

    assert OPTION_CHOICES["intervention"] == list(INTERVENTIONS) and OPTION_CHOICES["corruption"] == list(CORRUPTIONS)
    assert OPTION_CHOICES["metric"][:2] == list(LENS_METRICS) and OPTION_CHOICES["prompt"] is None
    assert {"resid", "mlp", "mlp_in", "attn"} <= set(OPTION_CHOICES["site"]) and "relative" in OPTION_CHOICES["stat"]


def test_hooks_public_surface_is_the_user_tools():
    from heatwidget import _block_calls, hooks

    internals = {
        "BlockCall",
        "run_block",
        "record_calls",
        "probe_calls",
        "trace_calls",
        "capture_at",
        "halt_after",
        "ForwardHalted",
    }
    assert not internals & set(hooks.__all__)
    assert {"skip", "zero", "capture", "block_attention", "edit_output"} <= set(hooks.__all__)
    assert hooks.probe_calls is _block_calls.trace_calls and hooks.run_block is _block_calls.run_block  # old names


def test_stop_tokens_and_context_length_have_one_rule(lm):
    from heatwidget._limits import context_length, stop_token_ids

    assert context_length(lm.config) == 256
    lm.model.generation_config.eos_token_id = [5, 6]
    try:
        assert stop_token_ids(lm.model, lm.tokenizer) == {5, 6, lm.tokenizer.eos_token_id}
    finally:
        lm.model.generation_config.eos_token_id = lm.model.config.eos_token_id


def _private_imports_across_folders() -> list[str]:
    """`from heatwidget.<a> import _name` where the importing module and <a> live in different folders (private
    modules such as `_lm` are fine to import: their public names are the package's internal API)."""
    root = Path(hw.__file__).parent
    bad = []
    for path in root.rglob("*.py"):
        here = path.parent
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.level:
                continue
            base = here
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split(".")) if node.module else base
            folder = target if target.is_dir() else target.parent
            for alias in node.names:
                module = (target / alias.name).with_suffix(".py").exists() or (target / alias.name).is_dir()
                if alias.name.startswith("_") and not alias.name.startswith("__") and folder != here and not module:
                    bad.append(f"{path.relative_to(root)}: {node.module}.{alias.name}")
    return bad


def test_no_private_name_is_imported_across_packages():
    assert _private_imports_across_folders() == []
