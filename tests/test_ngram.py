"""Testes de companion.ngram (cap. 1): contagens conferidas à mão, probabilidades,
amostragem reprodutível, perplexidade e todos os caminhos de erro."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.ngram import BigramModel, NGramModel, join_words, split_words

# Texto minúsculo, contado à mão:
#   o gato come . o gato dorme . o cão come .
# bigramas: (o,gato)=2 (o,cão)=1 (gato,come)=1 (gato,dorme)=1 (come,.)=2
#           (.,o)=2 (dorme,.)=1 (cão,come)=1        vocabulário: 6 palavras
TINY = "O gato come. O gato dorme. O cão come."


@pytest.fixture
def tiny() -> BigramModel:
    return BigramModel().fit(TINY)


# ------------------------------------------------------------------ palavras
def test_split_words_separates_punctuation_and_lowercases():
    assert split_words("O rato roeu a roupa do rei de Roma.") == [
        "o", "rato", "roeu", "a", "roupa", "do", "rei", "de", "roma", ".",
    ]  # fmt: skip
    assert split_words("Mãe, troquei de número!", lowercase=False) == ["Mãe", ",", "troquei", "de", "número", "!"]
    assert split_words("o guarda-chuva") == ["o", "guarda-chuva"]
    assert split_words("") == []


def test_join_words_glues_punctuation():
    assert join_words(["o", "céu", "está", "azul", ",", "não", "?"]) == "o céu está azul, não?"
    assert join_words([]) == ""


@given(st.lists(st.sampled_from(["o", "céu", "está", "azul", ".", ",", "!", "cinza"]), max_size=20))
def test_split_join_roundtrip(words):
    assert split_words(join_words(words)) == words


def test_split_words_rejects_non_text():
    with pytest.raises(TypeError, match="str"):
        split_words(["o", "céu"])  # type: ignore[arg-type]


# ---------------------------------------------------------------- contagens
def test_counts_match_hand_count(tiny):
    assert tiny.counts[("o",)] == Counter({"gato": 2, "cão": 1})
    assert tiny.counts[("gato",)] == Counter({"come": 1, "dorme": 1})
    assert tiny.counts[("come",)] == Counter({".": 2})
    assert tiny.counts[(".",)] == Counter({"o": 2})
    assert sum(sum(c.values()) for c in tiny.counts.values()) == 11  # 12 palavras -> 11 pares
    assert tiny.vocab == sorted(["o", "gato", "come", ".", "dorme", "cão"])


def test_next_word_probs_hand_values(tiny):
    probs = tiny.next_word_probs("Olha o")
    assert list(probs) == ["gato", "cão"]  # da mais para a menos provável
    assert probs["gato"] == pytest.approx(2 / 3)
    assert probs["cão"] == pytest.approx(1 / 3)
    assert tiny.next_word_probs("gato") == {"come": 0.5, "dorme": 0.5}  # empate: ordem alfabética
    assert tiny.next_word_probs(["O"], top=1) == {"gato": pytest.approx(2 / 3)}


def test_add_k_smoothing_hand_values(tiny):
    # (contagem + 1) / (total + 1 * V), com V = 6
    probs = tiny.next_word_probs("o", k=1)
    assert len(probs) == 6
    assert probs["gato"] == pytest.approx(3 / 9)
    assert probs["dorme"] == pytest.approx(1 / 9)
    smoothed = BigramModel(k=0.5).fit(TINY)
    assert smoothed.next_word_probs("o")["cão"] == pytest.approx(1.5 / 6)


def test_trigram_uses_two_words_of_context():
    model = NGramModel(n=3).fit(TINY)
    assert model.counts[("o", "gato")] == Counter({"come": 1, "dorme": 1})
    assert model.counts[(".", "o")] == Counter({"gato": 1, "cão": 1})
    assert model.next_word_probs("o cão") == {"come": 1.0}
    assert model.next_word_probs("bla bla o cão".split()[2:]) == {"come": 1.0}


def test_count_matrix_matches_counters(tiny):
    words = ["o", "gato", "cão", "come"]
    expected = torch.tensor([[0, 2, 1, 0], [0, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0]])
    torch.testing.assert_close(tiny.count_matrix(words), expected)
    full = tiny.count_matrix()
    assert full.shape == (6, 6)
    assert int(full.sum()) == 11


def test_probs_tensor_matches_normalised_count_matrix(tiny):
    matrix = tiny.count_matrix().double()
    for word in ["o", "gato", "."]:
        row = matrix[tiny.word_to_id[word]]
        torch.testing.assert_close(tiny.probs_tensor(word), row / row.sum())


def test_fit_resets_previous_counts(tiny):
    tiny.fit("a b a c")
    assert tiny.vocab == ["a", "b", "c"]
    assert ("o",) not in tiny.counts


def test_lowercase_false_keeps_case():
    model = BigramModel(lowercase=False).fit("O gato e o rato")
    assert "O" in model.vocab and "o" in model.vocab
    assert model.next_word_probs("O") == {"gato": 1.0}


# ----------------------------------------------------------- propriedades
_WORDS = st.lists(st.sampled_from(["a", "b", "c", "d", "."]), min_size=4, max_size=40)


@settings(max_examples=60, deadline=None)
@given(words=_WORDS, n=st.integers(2, 3), k=st.sampled_from([0.0, 0.1, 1.0]), data=st.data())
def test_probabilities_sum_to_one(words, n, k, data):
    model = NGramModel(n=n, k=k).fit(" ".join(words))
    contexts = [ctx for ctx in model.counts]
    ctx = data.draw(st.sampled_from(contexts))
    probs = model.next_word_probs(list(ctx))
    assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-12)
    assert all(p > 0 for p in probs.values())
    if k > 0:
        assert len(probs) == len(model.vocab)


# -------------------------------------------------------------- amostragem
def test_sampling_is_reproducible_under_a_seed(tiny):
    first = tiny.sample("o", num_words=30, seed=7)
    assert first == tiny.sample("o", num_words=30, seed=7)
    same = tiny.sample("o", num_words=30, generator=torch.Generator().manual_seed(7))
    assert first == same
    # Com sementes diferentes, pelo menos uma de várias continuações muda.
    assert len({tiny.sample("o", num_words=30, seed=s) for s in range(10)}) > 1


def test_sampling_uses_global_generator_without_seed(tiny):
    torch.manual_seed(3)
    a = tiny.sample("o", num_words=20)
    torch.manual_seed(3)
    assert a == tiny.sample("o", num_words=20)


def test_sampling_deterministic_chain_and_dead_end():
    model = BigramModel().fit("um dois três quatro")
    # Cada palavra tem um único sucessor: a amostragem não tem escolha.
    assert model.sample("um", num_words=2, seed=0) == "um dois três"
    # "quatro" nunca é seguido de nada: a geração para ali, sem erro.
    assert model.sample("um", num_words=10, seed=0) == "um dois três quatro"
    assert model.sample("dois", num_words=0) == "dois"


def test_sampling_frequencies_follow_probabilities(tiny):
    gen = torch.Generator().manual_seed(123)
    draws = Counter(tiny.sample("o", num_words=1, generator=gen).split()[-1] for _ in range(3000))
    assert set(draws) == {"gato", "cão"}
    assert draws["gato"] / 3000 == pytest.approx(2 / 3, abs=0.03)


def test_sampling_with_smoothing_can_leave_dead_end():
    model = BigramModel(k=1.0).fit("um dois três quatro")
    out = model.sample("quatro", num_words=5, seed=1)
    assert len(out.split()) == 6


# ------------------------------------------------------------ perplexidade
def test_perplexity_hand_value(tiny):
    # P(gato|o) = 2/3, P(come|gato) = 1/2  ->  (1/3) ** (-1/2) = sqrt(3)
    assert tiny.perplexity("o gato come") == pytest.approx(math.sqrt(3))


def test_perplexity_of_certain_chain_is_one():
    model = BigramModel().fit("um dois três quatro")
    assert model.perplexity("um dois três quatro") == pytest.approx(1.0)


def test_perplexity_unseen_bigram_is_infinite_without_smoothing(tiny):
    assert tiny.perplexity("o gato dorme . o cão dorme") == math.inf
    # Com add-1: P(dorme|cão) = (0 + 1) / (1 + 6); o resto vem das contagens suavizadas.
    smoothed = tiny.perplexity("cão dorme", k=1)
    assert smoothed == pytest.approx(7.0)


def test_smoothing_raises_perplexity_on_training_text(tiny):
    assert tiny.perplexity(TINY, k=1) > tiny.perplexity(TINY)


# ------------------------------------------------------------ erros (pt-BR)
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n": 1}, ValueError, "n deve ser >= 2"),
        ({"n": 2.0}, TypeError, "inteiro"),
        ({"n": True}, TypeError, "inteiro"),
        ({"k": -1}, ValueError, "k"),
        ({"k": float("nan")}, ValueError, "finito"),
        ({"k": "1"}, ValueError, "k"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        NGramModel(**kwargs)


def test_bigram_rejects_negative_k():
    with pytest.raises(ValueError, match="k"):
        BigramModel(k=-0.5)


def test_fit_errors():
    with pytest.raises(TypeError, match="str"):
        BigramModel().fit(["o", "gato"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pelo menos 3"):
        NGramModel(n=3).fit("só duas")
    with pytest.raises(ValueError, match="0 palavra"):
        BigramModel().fit("   ")


def test_unfitted_model_asks_for_fit():
    for call in (
        lambda m: m.next_word_probs("o"),
        lambda m: m.perplexity("o gato"),
        lambda m: m.sample("o"),
        lambda m: m.count_matrix(),
    ):
        with pytest.raises(RuntimeError, match="fit"):
            call(BigramModel())


def test_context_errors(tiny):
    with pytest.raises(ValueError, match="vazio"):
        tiny.next_word_probs("")
    with pytest.raises(ValueError, match="vazio"):
        tiny.next_word_probs("   ")
    with pytest.raises(ValueError, match="fora do vocabulário do modelo: 'jacaré'"):
        tiny.next_word_probs("o jacaré")
    with pytest.raises(ValueError, match="olha as últimas 2"):
        NGramModel(n=3).fit(TINY).next_word_probs("gato")
    with pytest.raises(TypeError, match="contexto"):
        tiny.next_word_probs(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="contexto"):
        tiny.next_word_probs(["o", 3])  # type: ignore[list-item]


def test_dead_end_context_needs_smoothing():
    model = BigramModel().fit("um dois três quatro")
    with pytest.raises(ValueError, match="nunca aparece"):
        model.next_word_probs("quatro")
    assert model.next_word_probs("quatro", k=1) == {w: 0.25 for w in ["dois", "quatro", "três", "um"]}


@pytest.mark.parametrize("top", [0, -1, 1.5, True])
def test_top_must_be_positive_int(tiny, top):
    with pytest.raises(ValueError, match="top"):
        tiny.next_word_probs("o", top=top)


def test_sample_errors(tiny):
    with pytest.raises(ValueError, match="num_words"):
        tiny.sample("o", num_words=-1)
    with pytest.raises(ValueError, match="seed ou generator"):
        tiny.sample("o", seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="vazio"):
        tiny.sample("", num_words=3)
    with pytest.raises(ValueError, match="k"):
        tiny.sample("o", k=-2)


def test_perplexity_errors(tiny):
    with pytest.raises(ValueError, match="pelo menos 2"):
        tiny.perplexity("gato")
    with pytest.raises(ValueError, match="fora do vocabulário"):
        tiny.perplexity("o jacaré come")
    with pytest.raises(TypeError, match="str"):
        tiny.perplexity(None)  # type: ignore[arg-type]


def test_count_matrix_rejects_unknown_words(tiny):
    with pytest.raises(ValueError, match="'onça'"):
        tiny.count_matrix(["o", "onça"])


def test_exported_from_package():
    import companion

    assert companion.BigramModel is BigramModel
    assert companion.NGramModel is NGramModel
    assert companion.split_words is split_words
    assert companion.join_words is join_words


def test_plot_next_word_probs_draws_one_bar_per_word(tiny):
    import matplotlib

    matplotlib.use("Agg")
    from companion.book.plots import plot_next_word_probs

    ax = plot_next_word_probs(tiny.next_word_probs("o"), "o")
    assert [bar.get_width() for bar in ax.patches] == pytest.approx([1 / 3, 2 / 3])  # a mais provável em cima
    assert [text.get_text() for text in ax.texts] == ["0,33", "0,67"]  # números no formato brasileiro
    assert ax.xaxis.get_major_formatter()(0.25, 0) == "0,25"
    with pytest.raises(ValueError, match="vazio"):
        plot_next_word_probs({}, "o")
