import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import companion
from companion.data import GPTDataset, create_dataloader
from companion.tokenizers import (
    ENDOFTEXT,
    BPETokenizer,
    SimpleTokenizer,
    gpt2_tokenizer,
)

TEXT = "O céu está azul. O céu está nublado. O céu estará azul de novo amanhã, se o vento ajudar."


def as_lists(pair):
    return [t.tolist() for t in pair]


# ----------------------------------------------------------------------------- GPTDataset
def test_windows_and_targets_exact_on_ids():
    ds = GPTDataset(list(range(10)), max_length=4, stride=2)
    # Janelas começam em 0, 2, 4 (a de 6 precisaria dos tokens 6..10, e o 10 não existe).
    assert len(ds) == 3
    assert as_lists(ds[0]) == [[0, 1, 2, 3], [1, 2, 3, 4]]
    assert as_lists(ds[1]) == [[2, 3, 4, 5], [3, 4, 5, 6]]
    assert as_lists(ds[2]) == [[4, 5, 6, 7], [5, 6, 7, 8]]
    assert as_lists(ds[-1]) == as_lists(ds[2])
    assert ds[0][0].dtype == torch.long and ds[0][0].shape == (4,)


def test_default_stride_is_max_length_without_overlap():
    ds = GPTDataset(torch.arange(13), max_length=4)
    assert ds.stride == 4 and len(ds) == 3  # 0..3, 4..7, 8..11 (alvo até 12)
    assert as_lists(ds[2]) == [[8, 9, 10, 11], [9, 10, 11, 12]]


def test_stride_larger_than_window_skips_tokens():
    ds = GPTDataset(list(range(20)), max_length=3, stride=5)
    assert [ds[i][0].tolist() for i in range(len(ds))] == [[0, 1, 2], [5, 6, 7], [10, 11, 12], [15, 16, 17]]


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=60),
    max_length=st.integers(min_value=1, max_value=20),
    stride=st.integers(min_value=1, max_value=20),
)
def test_window_count_and_shift_property(n, max_length, stride):
    ids = list(range(100, 100 + n))
    if n < max_length + 1:
        with pytest.raises(ValueError, match="precisa de max_length"):
            GPTDataset(ids, max_length=max_length, stride=stride)
        return
    ds = GPTDataset(ids, max_length=max_length, stride=stride)
    starts = list(range(0, n - max_length, stride))  # toda janela cujo alvo cabe no texto
    assert len(ds) == len(starts)
    for i, s in enumerate(starts):
        x, y = ds[i]
        assert x.tolist() == ids[s : s + max_length]
        assert y.tolist() == ids[s + 1 : s + max_length + 1]


def test_dataset_from_text_uses_the_tokenizer():
    tok = SimpleTokenizer.from_text(TEXT)
    ids = tok.encode(TEXT)
    ds = GPTDataset(TEXT, tok, max_length=5, stride=3)
    assert ds.token_ids.tolist() == ids
    assert as_lists(ds[1]) == [ids[3:8], ids[4:9]]


def test_dataset_recognizes_endoftext_with_tiktoken_and_bpe():
    text = "Primeiro texto." + ENDOFTEXT + "Segundo texto."
    ds = GPTDataset(text, gpt2_tokenizer(), max_length=2, stride=1)
    assert 50256 in ds.token_ids.tolist()
    bpe = BPETokenizer().train(TEXT, 300)
    ds_bpe = GPTDataset(text, bpe, max_length=2, stride=1)
    assert bpe.special_tokens[ENDOFTEXT] in ds_bpe.token_ids.tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_length": 0}, ValueError, "max_length deve ser um inteiro >= 1"),
        ({"max_length": -3}, ValueError, "max_length"),
        ({"max_length": 2.5}, ValueError, "max_length"),
        ({"max_length": True}, ValueError, "max_length"),
        ({"stride": 0}, ValueError, "stride deve ser um inteiro >= 1"),
        ({"stride": -1}, ValueError, "stride"),
        ({"max_length": 50}, ValueError, r"só 10 tokens.*max_length \+ 1 = 51"),
    ],
)
def test_dataset_size_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        GPTDataset(list(range(10)), **{"max_length": 4, **kwargs})


def test_dataset_type_errors():
    with pytest.raises(TypeError, match="passe também um tokenizer"):
        GPTDataset("texto sem tokenizador", max_length=2)
    with pytest.raises(TypeError, match="1-D de inteiros"):
        GPTDataset(torch.zeros(2, 5, dtype=torch.long), max_length=2)
    with pytest.raises(TypeError, match="1-D de inteiros"):
        GPTDataset(torch.rand(10), max_length=2)
    with pytest.raises(TypeError, match="IDs inteiros"):
        GPTDataset([1, 2, "3", 4], max_length=2)
    with pytest.raises(TypeError, match="sequência de IDs"):
        GPTDataset(12345, max_length=2)
    with pytest.raises(TypeError, match="método encode"):
        GPTDataset("abc def", object(), max_length=2)
    ds = GPTDataset(list(range(10)), max_length=4, stride=2)
    with pytest.raises(IndexError, match="há 3 janelas"):
        ds[3]


# ----------------------------------------------------------------------------- create_dataloader
def test_dataloader_batches_are_shifted_windows():
    tok = gpt2_tokenizer()
    text = companion.load_corpus()[:4000]
    ids = tok.encode(text)
    loader = create_dataloader(text, tok, batch_size=4, max_length=16, stride=16, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    expected = torch.tensor(ids[: 4 * 16 + 1])
    torch.testing.assert_close(x, expected[:-1].reshape(4, 16))  # janelas seguidas, sem sobreposição
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    # Com drop_last, todo lote é completo: floor(janelas / 4) lotes.
    n_windows = (len(ids) - 16 - 1) // 16 + 1
    assert len(loader) == n_windows // 4
    assert all(batch[0].shape == (4, 16) for batch in loader)


def test_dataloader_shuffle_with_seed_is_reproducible_and_a_permutation():
    ids_text = " ".join(f"p{i}" for i in range(200))
    tok = SimpleTokenizer.from_text(ids_text)
    make = lambda seed: create_dataloader(  # noqa: E731
        ids_text, tok, batch_size=5, max_length=4, stride=4, shuffle=True, drop_last=False, seed=seed
    )
    first = torch.cat([x for x, _ in make(7)])
    again = torch.cat([x for x, _ in make(7)])
    other = torch.cat([x for x, _ in make(8)])
    ordered = torch.cat([x for x, _ in create_dataloader(ids_text, tok, 5, 4, 4, shuffle=False, drop_last=False)])
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, ordered)
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, ordered.tolist()))


def test_dataloader_keeps_incomplete_last_batch_without_drop_last():
    tok = SimpleTokenizer.from_text(TEXT)
    n_windows = len(GPTDataset(TEXT, tok, max_length=3, stride=2))
    loader = create_dataloader(TEXT, tok, batch_size=4, max_length=3, stride=2, shuffle=False, drop_last=False)
    sizes = [x.shape[0] for x, _ in loader]
    assert sum(sizes) == n_windows and sizes[:-1] == [4] * (len(sizes) - 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"num_workers": -1}, ValueError, "num_workers"),
        ({"stride": 0}, ValueError, "stride"),
        ({"max_length": 500}, ValueError, "tokens"),
        ({"batch_size": 50, "max_length": 4}, ValueError, "nenhum lote sairia"),
    ],
)
def test_dataloader_errors(kwargs, error, message):
    tok = SimpleTokenizer.from_text(TEXT)
    with pytest.raises(error, match=message):
        create_dataloader(TEXT, tok, **kwargs)


def test_dataloader_rejects_non_text():
    with pytest.raises(TypeError, match="text deve ser um texto"):
        create_dataloader([1, 2, 3], gpt2_tokenizer())
