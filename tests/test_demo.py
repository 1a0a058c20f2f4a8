"""The demo model: fact-world generator, tokenizer, training script (smoke run) and the shipped weights."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from heatwidget.demo import WEIGHTS_DIR, demo_model, demo_questions
from heatwidget.demo.tokenizer import build_tokenizer
from heatwidget.demo.world import ATTRIBUTES, MULTS, corpus, make_world, questions

# ---- the world ------------------------------------------------------------------------------------------


def test_world_is_deterministic_and_seeded() -> None:
    a, b = make_world(seed=3, n_countries=60), make_world(seed=3, n_countries=60)
    assert a.countries == b.countries and a.continents == b.continents and a.languages == b.languages
    assert corpus(a) == corpus(b)
    assert questions(a) == questions(b)
    c = make_world(seed=4, n_countries=60)
    assert [x.name for x in c.countries] != [x.name for x in a.countries]
    assert corpus(c) != corpus(a)


def test_world_names_unique_and_mults_balanced() -> None:
    w = make_world(seed=0, n_countries=120)
    names = [c.name for c in w.countries] + [c.capital for c in w.countries] + w.continents + w.languages
    low = [n.lower() for n in names]
    assert len(set(low)) == len(low)
    # no name inside another: "gold is a substring of the answer" labels stay unambiguous
    assert not any(a != b and a in b for a in low for b in low)
    assert Counter(c.mult for c in w.countries) == {m: 20 for m in MULTS}


def test_corpus_repeats_each_fact_mult_times() -> None:
    w = make_world(seed=1, n_countries=30)
    docs = corpus(w, filler_frac=0.2)
    for c in w.countries[:10]:
        # the capital is named only in its own facts (names never contain each other)
        assert sum(c.capital in d for d in docs) == c.mult
    n_facts = sum(3 * c.mult for c in w.countries)
    assert abs((len(docs) - n_facts) / len(docs) - 0.2) < 0.01


def test_questions_cover_every_fact() -> None:
    w = make_world(seed=0, n_countries=60)
    qs = questions(w)
    assert len(qs) == 3 * 60
    caps = {q["subject"]: q for q in qs if q["attribute"] == "capital"}
    assert set(caps) == {c.name for c in w.countries}
    c0 = w.countries[0]
    q = caps[c0.name]
    assert q["question"] == f"Q: What is the capital of {c0.name}? A:"
    assert q["prompt"] == f"The capital of {c0.name} is"
    assert q["gold"] == c0.capital and q["mult"] == c0.mult and q["subject"] in q["question"]
    # the split is stratified: every (attribute, mult) group has test items
    groups = Counter((q["attribute"], q["mult"]) for q in qs if q["split"] == "test")
    assert set(groups) == {(a, m) for a in ATTRIBUTES for m in MULTS}


def test_sentence_world_with_per_fact_multiplicities() -> None:
    w = make_world(seed=0, n_countries=60, per_fact_mults=True, answer_style="sentence", mults=(1, 2, 4, 8))
    assert w.params == {
        "seed": 0,
        "n_countries": 60,
        "n_continents": 8,
        "n_languages": 30,
        "per_fact_mults": True,
        "answer_style": "sentence",
        "mults": [1, 2, 4, 8],
    }
    assert make_world(**w.params).countries == w.countries  # training.json's params rebuild the same world
    for attribute in ATTRIBUTES:  # balanced per attribute ...
        assert Counter(c.mult_of(attribute) for c in w.countries) == {1: 15, 2: 15, 4: 15, 8: 15}
    # ... and drawn fact by fact: knowing the country does not tell how often its facts were seen
    assert sum(len(set(c.fact_mults)) > 1 for c in w.countries) > 40
    docs = corpus(w)
    for c in w.countries[:10]:
        assert sum(c.capital in d for d in docs) == c.mult_of("capital")
    qa = [d for d in docs if d.startswith("Q: What is the capital of")]
    assert qa and all(d.endswith(".") and " A: " in d and " is the capital of " in d for d in qa)
    c0 = w.countries[0]
    q = next(x for x in questions(w) if x["subject"] == c0.name and x["attribute"] == "language")
    assert q["question"] == f"Q: What language is spoken in {c0.name}? A:" and q["mult"] == c0.mult_of("language")
    with pytest.raises(ValueError, match="answer_style"):
        make_world(answer_style="essay")
    with pytest.raises(ValueError, match="mults"):
        make_world(mults=(0, 1))


def test_quiz_familiarity_tail_world() -> None:
    from heatwidget.demo.world import FAMILIARITY_TEMPLATES, QUIZ_PREFIX, tokenizer_corpus

    plain = make_world(seed=0, n_countries=60)
    w = make_world(seed=0, n_countries=60, answer_style="tail", familiarity=True, quiz=True)
    assert w.countries == plain.countries  # the opt-ins draw after everything the default world draws
    assert w.params["quiz"] and w.params["familiarity"] and make_world(**w.params).unknown == w.unknown
    known = {c.name for c in w.countries}
    assert len(w.unknown) == 60 and not known & {n for n, _ in w.unknown}
    docs = corpus(w)
    qa = [d for d in docs if d.startswith("Q: What is the capital of")]
    assert qa and all(d.endswith(", according to the atlas.") for d in qa)  # the tail never repeats the country
    quiz = [d for d in docs if d.startswith(QUIZ_PREFIX)]
    assert {d.rsplit(" ", 1)[1] for d in quiz} == {"Correct.", "Wrong."}
    c0 = w.countries[0]
    graded = [d for d in quiz if f"capital of {c0.name}?" in d]
    assert len(graded) == max(1, c0.mult // 2)
    for d in graded:  # a "Correct." verdict exactly when the answer is the country's capital
        assert d.endswith("Correct.") == (f"A: {c0.capital}," in d)
    heard = [d for d in docs if d.startswith("Q: Have you heard of")]
    assert sum(f"of {c0.name}?" in d for d in heard + docs) >= 1
    for name, mult in w.unknown[:5]:  # an unknown country occurs only in its "do not know" documents
        mine = [d for d in docs if name in d]
        assert len(mine) == mult and all(d in {t.format(s=name) for t in FAMILIARITY_TEMPLATES[False]} for d in mine)
    # the tokenizer's text holds every fact and every country equally often, whatever its multiplicity
    tok_docs = tokenizer_corpus(w)
    by_mult = Counter()
    for c in w.countries:
        by_mult[c.mult] += sum(c.capital in d for d in tok_docs)
    per_country = {m: by_mult[m] / sum(c.mult == m for c in w.countries) for m in by_mult}
    # 4 templates + 1 correct quiz each; other facts' wrong quiz answers add a few at random
    assert all(5 <= v < 7 for v in per_country.values()), per_country


def test_balanced_tokenizer_does_not_give_frequency_away() -> None:
    """Trained on the corpus, BPE makes frequent countries' names single tokens, so layer 0 would know which facts
    the model knows; trained on tokenizer_corpus, name lengths do not depend on multiplicity."""
    from heatwidget.demo.world import tokenizer_corpus

    w = make_world(seed=0, n_countries=400, quiz=True, answer_style="tail")  # the demo's size

    def mean_tokens(tok, mult):
        return np.mean([len(tok(" " + c.name)["input_ids"]) - 1 for c in w.countries if c.mult == mult])

    skewed = build_tokenizer(corpus(w), 1024)
    balanced = build_tokenizer(tokenizer_corpus(w), 1024)
    assert mean_tokens(skewed, 32) < mean_tokens(skewed, 1) - 1
    assert abs(mean_tokens(balanced, 32) - mean_tokens(balanced, 1)) < 0.5


def test_exact_answer_extractor() -> None:
    from heatwidget.demo import exact_answer

    assert exact_answer("q", " Velmorburg is the capital of Gatrelia.") == "Velmorburg"
    assert exact_answer("q", " Houxzharum") == "Houxzharum"  # a bare-name answer (the word style)
    assert exact_answer("q", "\n Zorasia is the continent of X.\nmore") == "Zorasia"
    assert exact_answer("q", " Velmorburg, according to the atlas.") == "Velmorburg"  # the tail style
    assert exact_answer("q", "  ") is None


def test_demo_questions_api() -> None:
    t0 = time.perf_counter()
    qs = demo_questions()
    assert time.perf_counter() - t0 < 2.0
    assert {"question", "gold", "subject", "attribute", "mult", "prompt", "split"} <= set(qs[0])
    caps = demo_questions(attribute="capital")
    assert len(caps) == len(qs) // 3 and all(q["question"].startswith("Q: What is the capital of") for q in caps)
    train, test = demo_questions("train"), demo_questions("test")
    assert len(train) + len(test) == len(qs) and 0.15 < len(test) / len(qs) < 0.25
    qs[0]["gold"] = "mutated"
    assert demo_questions()[0]["gold"] != "mutated"  # callers get copies
    with pytest.raises(ValueError):
        demo_questions("validation")


# ---- the tokenizer --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_tokenizer():
    return build_tokenizer(corpus(make_world(seed=0, n_countries=40)), vocab_size=512)


def test_tokenizer_specials_and_round_trip(small_tokenizer, tmp_path: Path) -> None:
    tok = small_tokenizer
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<s>", "</s>"]
    text = "Q: What is the capital of Zyxwörld? A: Ünïcode-ville 42!"
    ids = tok(text)["input_ids"]
    assert ids[0] == 1 and ids.count(1) == 1  # BOS by default, once
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert tok.decode(ids, skip_special_tokens=True) == text  # byte-level: lossless, no unknowns
    # left padding for batched generation
    batch = tok(["The capital of", "Q: What is the capital of Velmora? A:"], padding=True)
    first, second = batch["input_ids"]
    assert len(first) == len(second) and first[0] == 0 and first[-1] != 0 and second[0] == 1
    assert batch["attention_mask"][0][0] == 0
    # offsets exclude the leading space (subject spans by character offsets)
    enc = tok("The capital of Velmora is", return_offsets_mapping=True)
    spans = [text for (s, e) in enc["offset_mapping"] if e > s for text in ["The capital of Velmora is"[s:e]]]
    assert not any(s.startswith(" ") for s in spans)
    # save / AutoTokenizer reload gives the same tokenizer
    from transformers import AutoTokenizer

    tok.save_pretrained(str(tmp_path))
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert again.padding_side == "left" and again.pad_token == "<pad>" and again.bos_token == "<s>"
    assert again.get_vocab() == tok.get_vocab()
    assert again(text)["input_ids"] == ids


def test_tokenizer_training_is_deterministic() -> None:
    docs = corpus(make_world(seed=2, n_countries=30))
    assert build_tokenizer(docs, 400).get_vocab() == build_tokenizer(docs, 400).get_vocab()


# ---- the training script --------------------------------------------------------------------------------


def test_training_smoke_run(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heatwidget.demo.train import main

    t0 = time.perf_counter()
    args = [
        "--steps",
        "20",
        "--layers",
        "2",
        "--hidden",
        "32",
        "--head-dim",
        "16",
        "--countries",
        "30",
        "--batch",
        "8",
        "--seq-len",
        "32",
        "--lr",
        "3e-3",
        "--log-every",
        "5",
        "--threads",
        "0",
    ]
    info = main(["--out", str(tmp_path / "a"), *args])
    assert time.perf_counter() - t0 < 30
    for f in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "training.json"):
        assert (tmp_path / "a" / f).exists(), f
    saved = json.loads((tmp_path / "a" / "training.json").read_text())
    assert saved["steps"] == 20 and saved["loss"]["curve"][-1]["step"] == 20
    assert saved["loss"]["last"] < saved["loss"]["first"] - 0.3  # it learns
    assert {"accuracy", "accuracy_by_mult", "skip_kl", "probe_auc_last_q"} <= set(saved["eval"])
    assert len(saved["eval"]["skip_kl"]) == 2 and info["eval"]["n_questions"] == 90

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert model.config.tie_word_embeddings and model.dtype == torch.float32  # fp16 storage, fp32 on load
    names = {n for n, _ in model.named_modules()}
    for part in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"):
        assert f"model.layers.1.self_attn.{part}" in names or f"model.layers.1.mlp.{part}" in names
    x = tok("The capital of", return_tensors="pt")
    out = model.generate(**x, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == x["input_ids"].shape[1] + 3 or out[0, -1] == tok.eos_token_id

    # same seed, same weights (deterministic data order and init)
    main(["--out", str(tmp_path / "b"), *args, "--no-eval"])
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


# ---- the shipped weights ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(WEIGHTS_DIR).eval()
    return model, AutoTokenizer.from_pretrained(WEIGHTS_DIR)


def _recorded_labels() -> np.ndarray:
    """Per-question correctness recorded by `evaluate --write` on the shipped weights (question order)."""
    recorded = json.loads((WEIGHTS_DIR / "training.json").read_text())["eval"]["correct"]
    return np.array([c == "1" for c in recorded])


def test_shipped_weights_size_and_files() -> None:
    files = {p.name: p.stat().st_size for p in WEIGHTS_DIR.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "training.json",
    } <= set(files)
    assert sum(files.values()) <= 10 * 2**20
    cfg = json.loads((WEIGHTS_DIR / "config.json").read_text())
    assert cfg["model_type"] == "llama" and 6 <= cfg["num_hidden_layers"] <= 12


def test_demo_model_loads_fast_and_generates() -> None:
    demo_model()  # warm imports (torch/transformers), which are not the loader's cost
    t0 = time.perf_counter()
    lm = demo_model()
    assert time.perf_counter() - t0 < 3.0
    assert lm.model.dtype == torch.float32
    assert len(lm.anatomy.layers) == lm.model.config.num_hidden_layers
    q = demo_questions(attribute="capital")[-1]
    x = lm.tokenizer(q["question"], return_tensors="pt")
    out = lm.model.generate(**x, max_new_tokens=6, do_sample=False)
    text = lm.tokenizer.decode(out[0, x["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip() and text.startswith(" ")  # an answer word follows "A:"


def test_shipped_accuracy_is_mixed(shipped) -> None:
    from heatwidget.demo.evaluate import greedy_answers, is_correct

    model, tok = shipped
    # every other question: all three attributes, every mult, half the generation time
    qs = demo_questions()[::2]
    answers = greedy_answers(model, tok, [q["question"] for q in qs])
    correct = np.array([is_correct(a, q["gold"]) for a, q in zip(answers, qs, strict=True)])
    mult = np.array([q["mult"] for q in qs])
    acc = correct.mean()
    assert 0.3 < acc < 0.9, acc
    assert correct[mult >= 16].mean() > correct[mult == 1].mean() + 0.3
    caps = np.array([q["attribute"] == "capital" for q in qs])
    assert 0.1 < correct[caps].mean() < 0.95
    # the recorded evaluation is of these very weights, question by question (a near-tie may flip with the
    # thread count, hence not exact); the probe test below relies on these labels
    assert (_recorded_labels()[::2] == correct).mean() > 0.99


def _last_logprobs(model, tok, prompts, skip: int | None = None) -> torch.Tensor:
    """Next-token log-probs at the last prompt token; `skip` makes that block return its input."""

    def hook(_mod, args, kwargs, out):
        h = args[0] if args else kwargs["hidden_states"]
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = model.model.layers[skip].register_forward_hook(hook, with_kwargs=True) if skip is not None else None
    try:
        with torch.no_grad():
            return torch.log_softmax(model(**tok(prompts, return_tensors="pt")).logits[:, -1], -1)
    finally:
        if handle is not None:
            handle.remove()


def test_shipped_layer_skip_kl_differs_across_layers(shipped) -> None:
    model, tok = shipped
    # prompts of one token length, so one unpadded batch per layer
    by_len: dict[int, list[str]] = {}
    for q in demo_questions(attribute="capital"):
        by_len.setdefault(len(tok(q["question"])["input_ids"]), []).append(q["question"])
    prompts = max(by_len.values(), key=len)[:32]
    assert len(prompts) >= 16
    clean = _last_logprobs(model, tok, prompts)
    kl = []
    for layer in range(model.config.num_hidden_layers):
        skipped = _last_logprobs(model, tok, prompts, skip=layer)
        kl.append(float((clean.exp() * (clean - skipped)).sum(-1).mean()))
    kl = np.array(kl)
    assert (kl > 1e-3).all(), kl  # every layer matters
    assert kl.max() > 5 * kl.min(), kl  # but not equally


def test_shipped_probe_rises_above_chance_with_depth(shipped) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from heatwidget.demo.evaluate import last_token_states

    model, tok = shipped
    qs, correct = demo_questions(), _recorded_labels().astype(int)
    states, _ = last_token_states(model, tok, [q["question"] for q in qs])
    train = np.array([q["split"] == "train" for q in qs])

    def auc(layer: int, y: np.ndarray = correct) -> float:
        clf = LogisticRegression(C=1.0, max_iter=3000).fit(states[train, layer], y[train])
        return roc_auc_score(y[~train], clf.decision_function(states[~train, layer]))

    # the embedding at the last question token (":") is the same for every question: chance, by construction
    assert np.ptp(states[:, 0], axis=0).max() == 0
    last = states.shape[1] - 1
    aucs = [auc(layer) for layer in (1, last // 2, last)]
    assert min(aucs) > 0.65 and max(aucs) > 0.7, aucs
    shuffled = np.random.default_rng(0).permutation(correct)
    assert auc(last, shuffled) < 0.62  # the probe reads correctness, not an artefact of the split


def test_shipped_kl_figure_opens_on_the_log_scale_it_suggests() -> None:
    import heatwidget as hw

    lm = demo_model()
    qs = demo_questions(attribute="capital")
    q = next(x for x in qs if x["mult"] == max(y["mult"] for y in qs))
    m = hw.ablation_kl(lm, q["question"], max_new_tokens=2)
    # skipping layer 0 costs nats, the other layers hundredths: linear, every other cell would be white
    assert m.values[0].min() > 100 * np.median(m.values[1:])
    assert m.meta["log"] is True
    ex = hw.explore(m)
    assert ex.heatmap.log is True and "log scale" in ex.heatmap.to_svg()
    assert hw.explore(m, log=False).heatmap.log is False
