"""hw.answer and token positions: labels, exact answers, spans and named positions checked by hand; generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.probing import answers as answers_mod
from heatwidget.probing.answers import find_span, match_gold
from heatwidget.probing.positions import normalize_positions, position_index

PROMPT = "Q : What is the capital of Velmora ? A :"  # word-level tiny tokenizer: one token per word


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return hw.load(tiny_dir("llama"))


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False)["input_ids"]


def _answer_with(lm, monkeypatch, generated: list[str], golds, **kw) -> hw.AnswerSet:
    """Run hw.answer with the model's generations replaced by `generated` (text; "</s>" = EOS)."""

    def fake(_lm, prompts, max_new_tokens, batch_size):
        gen = [_ids(lm, g) for g in generated]
        return gen, [np.linspace(-1, -2, len(g)).astype(np.float32) for g in gen]

    monkeypatch.setattr(answers_mod, "_generate", fake)
    return hw.answer(lm, [PROMPT] * len(generated), golds, **kw)


# ---- pure pieces ----------------------------------------------------------------------------------------------


def test_match_gold_is_case_insensitive_earliest_then_longest() -> None:
    assert match_gold(" paris, France", ["Paris"]) == "paris"
    assert match_gold("I think New York City", ["New York", "new york city", "NYC"]) == "New York City"
    assert match_gold("it is Rome or Paris", ["Paris", "Rome"]) == "Rome"
    assert match_gold("Berlin", ["Paris", " "]) is None


def test_positions_by_hand() -> None:
    # prompt of 12 tokens; answer tokens 12..14; exact answer = tokens 12..13
    idx = position_index(hw.PAPER_POSITIONS, np.array([12]), np.array([15]), np.array([[12, 13]]))
    named = dict(zip(hw.PAPER_POSITIONS, idx[0].tolist(), strict=True))
    assert named == {
        "last_q": 11,
        "first_answer": 12,
        "second_answer": 13,
        "exact_answer_before_first": 11,
        "exact_answer_first": 12,
        "exact_answer_last": 13,
        "exact_answer_after_last": 14,
        -8: 7,
        -7: 8,
        -6: 9,
        -5: 10,
        -4: 11,
        -3: 12,
        -2: 13,
        -1: 14,
    }
    # exact answer at the very end: after_last clamps to the last token (the paper's min(len - 1, last + 1))
    end = position_index(["exact_answer_last", "exact_answer_after_last", -1], [12], [15], np.array([[14, 14]]))
    assert end.tolist() == [[14, 14, 14]]
    assert normalize_positions(["last_q_token", "-3", 2]) == ["last_q", -3, 2]


def test_positions_beyond_the_sequence_are_errors() -> None:
    with pytest.raises(ValueError, match=r"'second_answer' is token 13 of row 1, but that row has only 13 tokens"):
        position_index(["second_answer"], np.array([12, 12]), np.array([14, 13]), np.array([[12, 12], [12, 12]]))
    with pytest.raises(ValueError, match="position -8 is token -2 of row 0"):
        position_index([-8], [5], [6], None)
    with pytest.raises(ValueError, match="unknown position"):
        normalize_positions(["middle"])
    with pytest.raises(ValueError, match="duplicates"):
        normalize_positions([-1, "-1"])


def test_find_span_smallest_window_multi_token_bpe() -> None:
    from heatwidget.demo.tokenizer import build_tokenizer

    tok = build_tokenizer(
        ["The capital of Velmora is Ostrand.", "Q: What is the capital of Kelvar? A: Tamor"] * 5, vocab_size=290
    )
    text = "Q: What is the capital of Velmora? A: Brisaburg.\nQ: Where"
    ids = tok(text)["input_ids"]
    start = len(tok("Q: What is the capital of Velmora? A:")["input_ids"])

    def dec(x):
        return tok.decode(x, skip_special_tokens=True)

    lo, hi = find_span(dec, ids, start, "brisaburg")  # case-insensitive, several byte-level pieces
    assert hi > lo >= start
    assert "brisaburg" in dec(ids[lo : hi + 1]).lower()
    assert "brisaburg" not in dec(ids[lo + 1 : hi + 1]).lower() and "brisaburg" not in dec(ids[lo:hi]).lower()
    assert find_span(dec, ids, start, "Velmora") is None  # only the answer's tokens are searched
    assert find_span(dec, ids, start, "") is None


# ---- hw.answer: labels, exact answers, spans, drops (generation replaced by known text) ------------------------


def test_answer_labels_exact_spans_by_hand(lm, monkeypatch) -> None:
    gen = [
        "Velmora city </s>",  # correct, multi-token exact answer, then EOS
        "the city Velmora",  # correct, exact answer is the last token (no EOS: max tokens hit)
        "the north river is </s>",  # wrong: the extractor picks "north river"
        "the river",
    ]  # wrong: first line = the whole answer
    golds = ["velmora CITY", ["Velmora"], "Ostrand", "Tamor"]

    def extractor(question: str, answer: str) -> str | None:
        assert question == PROMPT
        return "north river" if "north" in answer else None

    with pytest.warns(UserWarning, match="1 of 4 rows kept out"):
        a = _answer_with(lm, monkeypatch, gen, golds, extractor=extractor)
    # the 4th row: the extractor found nothing -> kept out, counted
    assert len(a) == 3 and a.meta["n_dropped"] == 1 and a.dropped[0]["index"] == 3
    assert a.dropped[0]["reason"] == "no exact answer"
    assert a.labels.tolist() == [1, 1, 0]
    assert a.exact == ["Velmora city", "Velmora", "north river"]
    assert a.prompt_len.tolist() == [12, 12, 12]  # <s> + 11 words
    assert a.span.tolist() == [[12, 13], [14, 14], [13, 14]]
    assert a.tokens(0)[12:] == ["Velmora", "city", "</s>"]
    pos = a.positions(hw.PAPER_POSITIONS)
    cols = {p: pos[:, j].tolist() for j, p in enumerate(hw.PAPER_POSITIONS)}
    assert cols["exact_answer_first"] == [12, 14, 13] and cols["exact_answer_last"] == [13, 14, 14]
    assert cols["exact_answer_after_last"] == [14, 14, 15]  # row 1 ends with its exact answer: clamped
    assert cols["exact_answer_before_first"] == [11, 13, 12] and cols[-1] == [14, 14, 16]


def test_answer_default_extractor_is_first_line_and_drops_are_counted(lm, monkeypatch) -> None:
    with pytest.warns(UserWarning, match="2 of 3 rows kept out"):
        a = _answer_with(
            lm,
            monkeypatch,
            ["north river", "</s>", "Velmora"],
            ["x", "y", "Velmora"],
            required_positions=["second_answer"],
        )
    # row 1: empty answer; row 2: one-token answer has no second answer token
    assert a.index.tolist() == [0] and a.exact == ["north river"]
    assert a.meta["dropped_reasons"] == {"empty answer": 1, "no token at position 'second_answer'": 1}
    with pytest.warns(UserWarning, match="1 of 2 rows kept out"):  # an extractor answer that is not in the answer
        b = _answer_with(
            lm,
            monkeypatch,
            ["north river", "the city"],
            ["Ostrand", "Tamor"],
            extractor=lambda q, a: "Paris" if "north" in a else "city",
        )
    assert b.dropped[0]["reason"] == "exact answer not found in the answer's tokens" and b.exact == ["city"]
    assert b.meta["extractor"] == "<lambda>"


def test_answer_bad_input(lm) -> None:
    with pytest.raises(ValueError, match="2 questions but 1 golds"):
        hw.answer(lm, [PROMPT, PROMPT], ["a"])
    with pytest.raises(ValueError, match="question 1 of 2 is empty"):
        hw.answer(lm, [PROMPT, "  "], ["a", "b"])
    with pytest.raises(ValueError, match="gold 0 is empty"):
        hw.answer(lm, [PROMPT], [[" "]])
    with pytest.raises(ValueError, match="exceeds the model's context"):
        hw.answer(lm, [PROMPT], ["a"], max_new_tokens=1000)
    with pytest.raises(ValueError, match="golds is missing"):
        hw.answer(lm, [PROMPT])


# ---- generation itself ------------------------------------------------------------------------------------------


def test_batched_generation_equals_one_by_one_and_logprobs_are_the_models(lm) -> None:
    qs = [PROMPT, "the capital of Brisa is", "Q : which language is spoken in Kelvar ? A :", "north river ? A :"]
    gen_b, lp_b = answers_mod._generate(lm, [lm.tokenizer(q)["input_ids"] for q in qs], 6, batch_size=4)
    gen_1, lp_1 = answers_mod._generate(lm, [lm.tokenizer(q)["input_ids"] for q in qs], 6, batch_size=1)
    assert gen_b == gen_1
    for q, g, lp, lp1 in zip(qs, gen_b, lp_b, lp_1, strict=True):
        p = lm.tokenizer(q)["input_ids"]
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([p + g])).logits[0]
        ref = torch.log_softmax(logits[len(p) - 1 : len(p) - 1 + len(g)], -1).gather(1, torch.tensor(g)[:, None])[:, 0]
        assert np.allclose(lp, ref.numpy(), atol=1e-4) and np.allclose(lp, lp1, atol=1e-4)
        assert len(g) == 6 or g[-1] == lm.tokenizer.eos_token_id  # stops at (and keeps) the first EOS


def test_chat_template_is_used_when_the_tokenizer_has_one(lm, monkeypatch) -> None:
    tok = lm.tokenizer
    assert answers_mod._prompt_ids(lm, ["the capital"], chat=False)[0][0][0] == tok.bos_token_id  # defaults
    tok.chat_template = "{% for m in messages %}<s> user : {{ m['content'] }} A :{% endfor %}"
    try:
        ids, texts = answers_mod._prompt_ids(lm, ["the capital of Brisa"], chat=True)
        assert texts == ["<s> user : the capital of Brisa A :"]
        assert ids[0] == tok(texts[0], add_special_tokens=False)["input_ids"]  # no second BOS
        a = _answer_with(lm, monkeypatch, ["Brisa </s>"], ["Brisa"])
        assert a.meta["chat_template"] is True and a.prompt_len[0] == len(
            _ids(lm, texts[0].replace("the capital of Brisa", PROMPT))
        )
        b = _answer_with(lm, monkeypatch, ["Brisa </s>"], ["Brisa"], chat_template=False)
        assert b.meta["chat_template"] is False and b.ids[0][0] == tok.bos_token_id
    finally:
        tok.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        hw.answer(lm, [PROMPT], ["a"], chat_template=True)


def test_required_positions_check_is_linear_in_rows() -> None:
    """hw.answer(required_positions=) checks every row at once: it took ~1 s of 4 on the 1,200 demo answers when
    each row's check recomputed every row's length (quadratic); 12,000 rows now take milliseconds, and the rows
    kept and dropped are those a row-by-row position_index check gives."""
    import time

    from heatwidget.demo import exact_answer

    lm = hw.demo_model()
    ans = hw.answer(lm, hw.demo_questions()[:60], extractor=exact_answer, max_new_tokens=8)
    big = ans.subset(np.tile(np.arange(len(ans)), 200))  # 12,000 rows
    t0 = time.perf_counter()
    kept = answers_mod._require_positions(big, hw.PAPER_POSITIONS)
    assert time.perf_counter() - t0 < 2.0
    want, seq_len = [], big.seq_len
    for r in range(len(big)):
        try:
            position_index(hw.PAPER_POSITIONS, big.prompt_len[r : r + 1], seq_len[r : r + 1], big.span[r : r + 1])
            want.append(r)
        except ValueError:
            pass
    assert len(kept) == len(want) and len(kept.dropped) == len(big) - len(want)
    assert [list(x) for x in kept.ids] == [list(big.ids[r]) for r in want]
