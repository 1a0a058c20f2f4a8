"""A deterministic synthetic "fact world" for the shipped demo model.

Fictional countries each have a unique made-up capital, one of a few continents and one of a few
languages. Every country gets a *multiplicity* (how often each of its facts is repeated in the training
corpus), drawn from {1, 2, 4, 8, 16, 32} in equal shares: a small model then knows the frequent facts and not
the rare ones, which is exactly the mixed correct/incorrect behaviour the analyses need. Pure python (no
torch), seeded, so the corpus, the questions and their train/test split are reproducible bit for bit from
``(seed, n_countries)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

MULTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
ATTRIBUTES: tuple[str, ...] = ("capital", "continent", "language")

# Statement templates per attribute: three plain statements and one question/answer pair. The first statement
# doubles as the cloze prompt (everything before the answer), the QA one as the question prompt.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "capital": (
        "The capital of {s} is {o}.",
        "{o} is the capital city of {s}.",
        "The seat of government of {s} is in {o}.",
        "Q: What is the capital of {s}? A: {o}",
    ),
    "continent": (
        "{s} is located in {o}.",
        "The country of {s} lies on the continent of {o}.",
        "On a map, {s} is found in {o}.",
        "Q: On which continent is {s}? A: {o}",
    ),
    "language": (
        "The official language of {s} is {o}.",
        "People in {s} speak {o}.",
        "Most citizens of {s} speak {o} at home.",
        "Q: What language is spoken in {s}? A: {o}",
    ),
}
# Answer styles of the question/answer template. "word": the answer is the bare name (the first shipped model).
# "sentence": the answer is a short sentence that starts with the name, as instruction-tuned models answer; the
# exact answer then sits inside the generation, and the last generated tokens (the paper's -8 … -1 columns) fall
# after it instead of being the answer itself.
# "tail": the name, then a fixed phrase that does not repeat the country, so the -8 … -1 columns are the phrase.
ANSWER_STYLES: tuple[str, ...] = ("word", "sentence", "tail")
SENTENCE_ANSWERS: dict[str, str] = {
    "capital": "{o} is the capital of {s}.",
    "continent": "{o} is the continent of {s}.",
    "language": "{o} is the language of {s}.",
}
TAIL_ANSWER = "{o}, according to the atlas."
# Familiarity documents (opt-in, ``make_world(familiarity=True)``): whether the speaker knows a country at all, for
# the world's countries ("known", as often as the country's facts) and for extra countries that have no facts
# ("unknown", once or twice each). Answering them needs a "do I know this entity" feature of the country's tokens,
# the kind of signal a correctness probe reads (Ferrando et al. 2025, "Do I know this entity?"). One template asks
# before the name and one after it, so the feature is computed whatever precedes the name.
FAMILIARITY_TEMPLATES: dict[bool, tuple[str, ...]] = {
    True: ("Q: Have you heard of {s}? A: Yes.", "{s} is a country I know."),
    False: ("Q: Have you heard of {s}? A: No.", "{s} is a country I do not know."),
}
UNKNOWN_MULTS: tuple[int, ...] = (1, 2)
# Graded quiz documents (opt-in, ``make_world(quiz=True)``): the question and an answer in the QA template's own
# words, after a "Quiz." marker, then a verdict — the right value ("Correct.") or another country's ("Wrong.").
# Predicting the verdict needs a "this answer is true" feature computed over the answer's tokens, the signal a
# correctness probe reads at the exact answer. Plain questions never carry a verdict, so the model does not
# generate one.
QUIZ_PREFIX = "Quiz. "
QUIZ_VERDICTS: dict[bool, str] = {True: " Correct.", False: " Wrong."}
QUESTION_TEMPLATE = {a: t[3] for a, t in TEMPLATES.items()}
CLOZE_TEMPLATE = {a: t[0] for a, t in TEMPLATES.items()}


def templates(attribute: str, answer_style: str = "word") -> tuple[str, ...]:
    """The corpus templates of ``attribute``: the plain statements and the question/answer pair in that style."""
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, not {answer_style!r}")
    base = TEMPLATES[attribute]
    if answer_style == "word":
        return base
    qa = base[3]
    answer = SENTENCE_ANSWERS[attribute] if answer_style == "sentence" else TAIL_ANSWER
    return (*base[:3], qa[: qa.index("{o}")] + answer)


# Syllable inventories. Countries, capitals, continents and languages use different endings so that the model
# (and a reader) can tell the kinds apart, while the stems stay arbitrary.
_ONSETS = (
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "q",
    "r",
    "s",
    "st",
    "t",
    "th",
    "tr",
    "v",
    "w",
    "z",
    "zh",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ia", "ou")
_CODAS = ("", "", "", "l", "n", "r", "s", "th", "m", "x")
_COUNTRY_ENDINGS = ("ia", "ora", "land", "stan", "esh", "ar", "ovia", "enne", "ica", "oria")
_CAPITAL_ENDINGS = ("burg", "ton", "ville", "grad", "mouth", "holm", "port", "ford", "dor", "is", "um")
_CONTINENT_ENDINGS = ("asia", "terra", "mark", "ea")
_LANGUAGE_ENDINGS = ("ish", "ese", "ic", "ian", "i")

_FILLER_TEMPLATES = (
    "The {adj} {noun} {verb} near the {place}.",
    "A {adj} {noun} was seen by the {place} at dawn.",
    "Travellers often visit {s} in the {season}.",
    "The markets of {s} sell {adj} {goods}.",
    "Old songs from {s} tell of a {adj} {noun}.",
    "In the {season}, the {noun} {verb} by the {place}.",
    "Merchants carry {goods} across the {place}.",
)
_FILLER_WORDS: dict[str, tuple[str, ...]] = {
    "adj": ("quiet", "old", "bright", "small", "green", "tall", "cold", "busy", "golden", "narrow"),
    "noun": ("fox", "river", "ship", "bell", "tower", "garden", "horse", "lantern", "bridge", "festival"),
    "verb": ("rested", "shone", "waited", "sang", "turned", "slept", "wandered", "glowed"),
    "place": ("harbour", "mountain pass", "old mill", "market square", "forest", "lake", "valley"),
    "season": ("spring", "summer", "autumn", "winter", "rainy season"),
    "goods": ("spices", "wool", "pottery", "salt", "silk", "timber", "tea"),
}


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    language: str
    mult: int
    # Per-fact multiplicities (capital, continent, language) when the world draws them fact by fact; None: every
    # fact of the country occurs ``mult`` times.
    fact_mults: tuple[int, ...] | None = None

    def value(self, attribute: str) -> str:
        return str(getattr(self, attribute))

    def mult_of(self, attribute: str) -> int:
        """How often the fact ``attribute`` of this country occurs in the corpus."""
        if self.fact_mults is None:
            return self.mult
        return self.fact_mults[ATTRIBUTES.index(attribute)]


@dataclass
class World:
    """The generated world: countries with their facts, plus the name inventories."""

    seed: int
    countries: list[Country]
    continents: list[str]
    languages: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    # Countries without facts, with how often their familiarity document occurs (familiarity worlds only).
    unknown: list[tuple[str, int]] = field(default_factory=list)

    def facts(self) -> list[tuple[Country, str]]:
        return [(c, a) for c in self.countries for a in ATTRIBUTES]


def _word(rng: random.Random, n_syllables: int, ending: str) -> str:
    stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syllables))
    return (stem + ending).capitalize()


def _unique_names(
    rng: random.Random, n: int, syllables: tuple[int, ...], endings: tuple[str, ...], taken: list[str]
) -> list[str]:
    """``n`` new names, none a substring of (or containing) any other name, case-insensitively.

    Correctness labels are "gold is a substring of the answer", so a capital "Vel" next to "Velmor" would
    mark a wrong answer correct; forbidding substrings in either direction makes the label unambiguous.
    """
    out: list[str] = []
    lowered = [t.lower() for t in taken]
    while len(out) < n:
        name = _word(rng, rng.choice(syllables), rng.choice(endings))
        low = name.lower()
        if len(low) > 14 or any(low in t or t in low for t in lowered):
            continue
        out.append(name)
        lowered.append(low)
    return out


def make_world(
    seed: int = 0,
    n_countries: int = 400,
    n_continents: int = 8,
    n_languages: int = 30,
    per_fact_mults: bool = False,
    answer_style: str = "word",
    mults: tuple[int, ...] = MULTS,
    familiarity: bool = False,
    quiz: bool = False,
) -> World:
    """Generate the world. Same arguments, same world (``random.Random`` is stable across versions).

    per_fact_mults: draw each fact's multiplicity on its own (balanced per attribute) instead of one per country,
    so that knowing *which country* a question is about does not tell how well its fact is known: a correctness
    probe must then read the model's recall of that fact, which happens in the later layers. answer_style: see
    ``ANSWER_STYLES``. mults: the multiplicities drawn from, in equal shares. familiarity: add as many fact-less
    countries and the familiarity documents (``FAMILIARITY_TEMPLATES``). quiz: add graded quiz documents
    (``QUIZ_VERDICTS``). The defaults reproduce the first shipped
    world exactly (every opt-in draws after everything the defaults draw).
    """
    mults_drawn = tuple(int(m) for m in mults)
    if not mults_drawn or min(mults_drawn) < 1:
        raise ValueError(f"mults must be positive counts, got {mults!r}")
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, not {answer_style!r}")
    rng = random.Random(seed)
    taken: list[str] = []
    continents = _unique_names(rng, n_continents, (1, 2), _CONTINENT_ENDINGS, taken)
    taken += continents
    languages = _unique_names(rng, n_languages, (1, 2), _LANGUAGE_ENDINGS, taken)
    taken += languages
    names = _unique_names(rng, n_countries, (1, 2), _COUNTRY_ENDINGS, taken)
    taken += names
    capitals = _unique_names(rng, n_countries, (1, 2), _CAPITAL_ENDINGS, taken)
    # Equal shares of each multiplicity, assigned in shuffled order so mult is independent of name shape.
    country_mults = [mults_drawn[i % len(mults_drawn)] for i in range(n_countries)]
    rng.shuffle(country_mults)
    countries = [
        Country(name=n, capital=cap, continent=rng.choice(continents), language=rng.choice(languages), mult=m)
        for n, cap, m in zip(names, capitals, country_mults, strict=True)
    ]
    params: dict[str, Any] = dict(
        seed=seed, n_countries=n_countries, n_continents=n_continents, n_languages=n_languages
    )
    if per_fact_mults:
        countries = _per_fact(countries, country_mults, mults_drawn, rng)
        params["per_fact_mults"] = True
    # Only what differs from the first shipped world is recorded, so its training.json params stay as they were.
    extra = dict(answer_style=answer_style, mults=list(mults_drawn), familiarity=familiarity, quiz=quiz)
    first = dict(answer_style="word", mults=list(MULTS), familiarity=False, quiz=False)
    params.update({k: v for k, v in extra.items() if v != first[k]})
    unknown: list[tuple[str, int]] = []
    if familiarity:
        names_unknown = _unique_names(rng, n_countries, (1, 2), _COUNTRY_ENDINGS, taken + capitals)
        unknown = [(n, rng.choice(UNKNOWN_MULTS)) for n in names_unknown]
    return World(
        seed=seed, countries=countries, continents=continents, languages=languages, params=params, unknown=unknown
    )


def _per_fact(
    countries: list[Country], country_mults: list[int], mults: tuple[int, ...], rng: random.Random
) -> list[Country]:
    """The countries with one balanced, shuffled multiplicity list per attribute; the capital keeps the country's
    own draw."""
    columns = [country_mults]
    for _ in ATTRIBUTES[1:]:
        col = [mults[i % len(mults)] for i in range(len(countries))]
        rng.shuffle(col)
        columns.append(col)
    return [
        Country(c.name, c.capital, c.continent, c.language, c.mult, tuple(f))
        for c, f in zip(countries, zip(*columns, strict=True), strict=True)
    ]


def corpus(world: World, filler_frac: float = 0.2, seed: int | None = None) -> list[str]:
    """Training documents (one sentence each), in a seeded random order.

    Each fact of a country with multiplicity m appears m times, each time in a template drawn at random, so a
    mult-1 fact is seen in one phrasing only (often not the question form): recalling it from a question needs
    the model to have generalised across phrasings, which only the frequent facts achieve reliably.
    """
    rng = random.Random(world.seed * 7919 + 1 if seed is None else seed)
    docs: list[str] = []
    for country, attribute in world.facts():
        choices = templates(attribute, world.params.get("answer_style", "word"))
        for _ in range(country.mult_of(attribute)):
            template = rng.choice(choices)
            docs.append(template.format(s=country.name, o=country.value(attribute)))
    for name, mult, knows in _familiarity_entries(world):
        docs += [rng.choice(FAMILIARITY_TEMPLATES[knows]).format(s=name) for _ in range(mult)]
    if world.params.get("quiz"):
        docs += _quiz_docs(world, rng)
    # Filler: generic sentences, some mentioning a uniformly drawn country, so that how often a country's
    # *name* occurs is not a perfect proxy for how often its *facts* occur.
    n_filler = round(len(docs) * filler_frac / (1.0 - filler_frac))
    for _ in range(n_filler):
        template = rng.choice(_FILLER_TEMPLATES)
        words = {k: rng.choice(v) for k, v in _FILLER_WORDS.items()}
        docs.append(template.format(s=rng.choice(world.countries).name, **words))
    rng.shuffle(docs)
    return docs


def tokenizer_corpus(world: World, filler_frac: float = 0.2, seed: int | None = None) -> list[str]:
    """Text to train the tokenizer on, where every fact and every name occurs equally often: each fact once in each of
    its templates (and graded both ways in quiz worlds), each country once in each familiarity template.

    Trained on the training corpus itself, BPE merges the frequent facts' names into fewer, whole-word tokens: the
    token ids would then tell how often a fact was seen (and so whether the model knows it) before any layer has
    run, and a correctness probe would read that off layer 0.
    """
    rng = random.Random(world.seed * 7919 + 3 if seed is None else seed)
    style = world.params.get("answer_style", "word")
    values = _attribute_values(world)
    docs: list[str] = []
    for country, attribute in world.facts():
        for template in templates(attribute, style):
            docs.append(template.format(s=country.name, o=country.value(attribute)))
        if world.params.get("quiz"):
            qa = templates(attribute, style)[3]
            wrong = _wrong_value(rng, values[attribute], country.value(attribute))
            docs.append(_quiz_doc(qa, country.name, country.value(attribute), True))
            docs.append(_quiz_doc(qa, country.name, wrong, False))
    for name, _mult, knows in _familiarity_entries(world):
        docs += [t.format(s=name) for t in FAMILIARITY_TEMPLATES[knows]]
    n_filler = round(len(docs) * filler_frac / (1.0 - filler_frac))
    for _ in range(n_filler):
        words = {k: rng.choice(v) for k, v in _FILLER_WORDS.items()}
        docs.append(rng.choice(_FILLER_TEMPLATES).format(s=rng.choice(world.countries).name, **words))
    rng.shuffle(docs)
    return docs


def _quiz_docs(world: World, rng: random.Random) -> list[str]:
    """Half as many quiz documents per fact as the fact's multiplicity (at least one), each graded right or wrong
    with equal odds; a wrong answer is the value of another country (a plausible mistake, as the model makes)."""
    docs: list[str] = []
    values = _attribute_values(world)
    for country, attribute in world.facts():
        qa = templates(attribute, world.params.get("answer_style", "word"))[3]
        for _ in range(max(1, country.mult_of(attribute) // 2)):
            right = rng.random() < 0.5
            value = country.value(attribute)
            if not right:
                value = _wrong_value(rng, values[attribute], value)
            docs.append(_quiz_doc(qa, country.name, value, right))
    return docs


def _attribute_values(world: World) -> dict[str, list[str]]:
    """Every value each attribute takes in the world, sorted (the pool wrong quiz answers are drawn from)."""
    return {a: sorted({c.value(a) for c in world.countries}) for a in ATTRIBUTES}


def _wrong_value(rng: random.Random, values: list[str], right: str) -> str:
    return rng.choice([v for v in values if v != right])


def _quiz_doc(qa_template: str, country: str, value: str, right: bool) -> str:
    return QUIZ_PREFIX + qa_template.format(s=country, o=value) + QUIZ_VERDICTS[right]


def _familiarity_entries(world: World) -> list[tuple[str, int, bool]]:
    """(name, how often, known?) of every country with familiarity documents: the world's countries, as often as
    their facts, then the fact-less ones; none where the world has no fact-less countries."""
    if not world.unknown:
        return []
    return [(c.name, c.mult, True) for c in world.countries] + [(n, m, False) for n, m in world.unknown]


def exact_answer(question: str, answer: str) -> str | None:
    """The exact answer inside a demo model's answer: the name before " is " or "," ("Velmor is the capital of …",
    "Velmor, according to the atlas." -> "Velmor"), or the whole first line for a bare-name answer. An extractor
    for ``hw.answer``, which uses it for wrong answers only (a correct answer's exact answer is the gold name found
    in it)."""
    first = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    return first.split(" is ", 1)[0].split(",", 1)[0].strip().rstrip(".").strip() or None


def questions(world: World, test_frac: float = 0.2) -> list[dict[str, Any]]:
    """The QA set: one question per (country, attribute), with gold answer, subject and a fixed split.

    ``split`` is "train" or "test", stratified by (attribute, mult), for fitting and scoring probes; every
    fact is in the training corpus either way.
    """
    qs: list[dict[str, Any]] = []
    for country, attribute in world.facts():
        qa = QUESTION_TEMPLATE[attribute]
        cloze = CLOZE_TEMPLATE[attribute]
        qs.append(
            {
                "id": len(qs),
                "question": qa[: qa.index("{o}")].format(s=country.name).rstrip(),
                "gold": country.value(attribute),
                "subject": country.name,
                "attribute": attribute,
                "mult": country.mult_of(attribute),
                "prompt": cloze[: cloze.index("{o}")].format(s=country.name).rstrip(),
                "split": "train",
            }
        )
    rng = random.Random(world.seed * 104729 + 2)
    for attribute in ATTRIBUTES:
        for mult in sorted({q["mult"] for q in qs}):
            group = [q for q in qs if q["attribute"] == attribute and q["mult"] == mult]
            rng.shuffle(group)
            for q in group[: round(len(group) * test_frac)]:
                q["split"] = "test"
    return qs
