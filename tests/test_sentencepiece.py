"""Testes de companion/sentencepiece.py (o tokenizador SentencePiece BPE do Gemma 3).

Aqui, um vocabulário minúsculo feito à mão, em que cada resultado se confere de cabeça.
A comparação com o tokenizador do ``transformers`` sobre o vocabulário de verdade (262.144
tokens) está em ``tests/test_gemma3.py`` (marcada ``slow``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.sentencepiece import (
    BYTE,
    CONTROL,
    NORMAL,
    SPACE,
    USER_DEFINED,
    SentencePieceTokenizer,
)

# IDs fixos: a ordem da lista é a prioridade das fusões (quem vem antes funde primeiro).
CONTROLS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]  # 0..4
USER = ["\n", "\n\n", "<b>", "  "]  # 5..8 ("  ": bloco de espaços gravado com espaços de verdade)
BYTES = [f"<0x{b:02X}>" for b in range(256)]  # 9..264
NORMALS = ["▁", "a", "b", "c", "d", "▁a", "bc", "ab", "abc", "cd", "ç", "ão"]  # 265..


def make_pieces(normals: list[str] = NORMALS) -> tuple[list[str], list[int]]:
    pieces = CONTROLS + USER + BYTES + normals
    kinds = [CONTROL] * len(CONTROLS) + [USER_DEFINED] * len(USER) + [BYTE] * 256 + [NORMAL] * len(normals)
    return pieces, kinds


def make_tokenizer(normals: list[str] = NORMALS) -> SentencePieceTokenizer:
    pieces, kinds = make_pieces(normals)
    return SentencePieceTokenizer(pieces, kinds, bos_id=2, eos_id=1, unk_id=3, pad_id=0)


@pytest.fixture(scope="module")
def tok() -> SentencePieceTokenizer:
    return make_tokenizer()


def ids_of(tok: SentencePieceTokenizer, *pieces: str) -> list[int]:
    return [tok.piece_to_id(p) for p in pieces]


# ----------------------------------------------------------------------------- codificar
def test_spaces_become_the_space_piece(tok):
    assert tok.encode(" ") == ids_of(tok, "▁")
    assert tok.encode("a a") == ids_of(tok, "a", "▁a")
    assert tok.encode(" a") == ids_of(tok, "▁a")  # sem ▁ extra no começo: " a" e "a" diferem
    assert tok.encode("a") == ids_of(tok, "a")


def test_merges_follow_the_order_of_the_vocabulary():
    # "bc" vem antes de "ab": em "abc" sai primeiro b+c, e a+bc não é token
    first_bc = make_tokenizer(["a", "b", "c", "bc", "ab"])
    assert first_bc.encode("abc") == ids_of(first_bc, "a", "bc")
    # trocando a ordem, a+b ganha
    first_ab = make_tokenizer(["a", "b", "c", "ab", "bc"])
    assert first_ab.encode("abc") == ids_of(first_ab, "ab", "c")


def test_merges_continue_until_no_pair_is_a_token(tok):
    # "abcd": b+c (bc) vem antes de a+b e de c+d; depois a+bc forma abc; abc+d não é token
    assert tok.encode("abcd") == ids_of(tok, "abc", "d")
    assert tok.encode("dcd") == ids_of(tok, "d", "cd")
    # "ão" é token, mas "ã" e "o" sozinhos não: sem símbolos para fundir, sobram os bytes
    assert tok.encode("ão") == ids_of(tok, "<0xC3>", "<0xA3>", "<0x6F>")


def test_ties_go_to_the_leftmost_pair():
    t = make_tokenizer(["a", "aa"])
    assert t.encode("aaa") == ids_of(t, "aa", "a")


def test_equal_merged_token_prefers_the_longer_left_piece():
    # "abc" pode vir de ab+c ou de a+bc; as duas junções dão o mesmo token, e a com a peça
    # da esquerda mais longa vem antes (a ordem das fusões do transformers)
    t = make_tokenizer(["a", "b", "c", "x", "ab", "bc", "abc"])
    assert t.encode("abc") == ids_of(t, "abc")
    assert t.encode("abcxabc") == ids_of(t, "abc", "x", "abc")


def test_byte_fallback_for_characters_outside_the_vocabulary(tok):
    ids = tok.encode("é")  # 0xC3 0xA9 em UTF-8
    assert ids == ids_of(tok, "<0xC3>", "<0xA9>")
    assert tok.encode("ç") == ids_of(tok, "ç")  # este está no vocabulário
    assert tok.encode("aéb") == ids_of(tok, "a", "<0xC3>", "<0xA9>", "b")
    assert tok.encode("🙂") == ids_of(tok, "<0xF0>", "<0x9F>", "<0x99>", "<0x82>")


def test_whole_tokens_are_found_before_bpe(tok):
    assert tok.encode("a\nb") == ids_of(tok, "a", "\n", "b")
    assert tok.encode("\n\n\n") == ids_of(tok, "\n\n", "\n")  # o mais longo primeiro
    assert tok.encode("<b>ab</b>") == ids_of(tok, "<b>", "ab", "<0x3C>", "<0x2F>", "b", "<0x3E>")
    assert tok.encode("<<b>") == ids_of(tok, "<0x3C>", "<b>")  # o mais à esquerda que casa


def test_control_tokens_in_text(tok):
    assert tok.encode("<bos>a<eos>") == [2, tok.piece_to_id("a"), 1]
    as_text = tok.encode("<eos>", special=False)
    assert 1 not in as_text and tok.decode(as_text) == "<eos>"
    assert tok.encode("<start_of_turn>") == [4]


def test_space_runs_are_built_by_merges(tok):
    # "  " está gravado com espaços, mas vira ▁▁ e sai das fusões (▁ + ▁), não inteiro
    assert tok.encode("  ") == ids_of(tok, "▁▁")
    assert tok.piece_to_id("  ") == tok.piece_to_id("▁▁") == 8
    assert tok.encode("   a") == ids_of(tok, "▁▁", "▁a")


def test_bos_flag(tok):
    assert tok.encode("a", bos=True) == [2, tok.piece_to_id("a")]
    assert tok.encode("", bos=True) == [2]
    assert tok.encode("") == []


# ----------------------------------------------------------------------------- decodificar
def test_decode_examples(tok):
    assert tok.decode(ids_of(tok, "▁a", "bc")) == " abc"
    assert tok.decode([2, *ids_of(tok, "a"), 1]) == "<bos>a<eos>"
    assert tok.decode([2, *ids_of(tok, "a"), 1], skip_special=True) == "a"
    assert tok.decode(ids_of(tok, "<0xC3>", "<0xA9>", "a")) == "éa"
    assert tok.decode(ids_of(tok, "<0xC3>", "a")) == "\ufffda"  # byte solto: um � por byte
    assert tok.decode(ids_of(tok, "<0xF0>", "<0x9F>")) == "\ufffd\ufffd"
    assert tok.decode(ids_of(tok, "  ")) == "  "


@settings(max_examples=300, deadline=None)
@given(st.text(st.one_of(st.sampled_from(list("abcd ç\n<>/bãoé\t")), st.characters(codec="utf-8"))))
def test_round_trip(text):
    tok = make_tokenizer()
    text = text.replace(SPACE, "")  # "▁" e " " são o mesmo token (como no SentencePiece)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, special=False)) == text


def test_piece_lookup(tok):
    assert tok.piece_to_id("▁a") == tok.piece_to_id(" a")
    assert tok.id_to_piece(tok.piece_to_id(" a")) == "▁a"
    assert tok.id_to_piece(8) == "▁▁"
    assert tok.n_vocab == len(CONTROLS) + len(USER) + 256 + len(NORMALS)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id, tok.add_bos) == (2, 1, 3, 0, True)
    assert "n_vocab=" in repr(tok)


# ----------------------------------------------------------------------------- erros
def test_encode_and_decode_errors(tok):
    with pytest.raises(TypeError, match="encode espera um texto"):
        tok.encode(b"abc")
    with pytest.raises(ValueError, match="bos deve ser True ou False"):
        tok.encode("a", bos=1)
    with pytest.raises(ValueError, match="ID de token fora do vocabulário: 99999"):
        tok.decode([1, 99999])
    with pytest.raises(ValueError, match="fora do vocabulário: -1"):
        tok.id_to_piece(-1)
    with pytest.raises(ValueError, match="'xyz' não é um token"):
        tok.piece_to_id("xyz")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, k: (p, k[:-1]), "mesmo tamanho"),
        (lambda p, k: ([], []), "mesmo tamanho"),
        (lambda p, k: (p, [*k[:-1], 9]), "tipo de token 9"),
        (lambda p, k: ([*p[:-1], "a"], k), "'a' aparece duas vezes"),
        (lambda p, k: ([*p[:-1], "▁▁"], k), "aparece duas vezes"),  # "  " e "▁▁" são o mesmo token
        (lambda p, k: ([q if q != "<0x41>" else "A" for q in p], k), "tokens de byte <0x41>"),
    ],
)
def test_constructor_errors(change, message):
    pieces, kinds = change(*make_pieces())
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer(pieces, kinds, bos_id=2, eos_id=1, unk_id=3, pad_id=0)


@pytest.mark.parametrize(("name", "value"), [("bos_id", 10**6), ("eos_id", -1), ("pad_id", True), ("unk_id", "3")])
def test_special_ids_must_be_in_the_vocabulary(name, value):
    pieces, kinds = make_pieces()
    ids = {"bos_id": 2, "eos_id": 1, "unk_id": 3, "pad_id": 0, name: value}
    with pytest.raises(ValueError, match=f"{name} deve ser um ID de token"):
        SentencePieceTokenizer(pieces, kinds, **ids)


def fake_reader(fields: dict) -> SimpleNamespace:
    return SimpleNamespace(fields={k: SimpleNamespace(contents=lambda v=v: v) for k, v in fields.items()})


def gguf_fields(**changes) -> dict:
    pieces, kinds = make_pieces()
    fields = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": pieces,
        "tokenizer.ggml.token_type": kinds,
        "tokenizer.ggml.bos_token_id": 2,
        "tokenizer.ggml.eos_token_id": 1,
        "tokenizer.ggml.unknown_token_id": 3,
        "tokenizer.ggml.padding_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_space_prefix": False,
        **changes,
    }
    return {k: v for k, v in fields.items() if v is not None}


def test_from_gguf_reads_the_metadata():
    tok = SentencePieceTokenizer.from_gguf(fake_reader(gguf_fields()))
    assert tok.encode("a a") == ids_of(tok, "a", "▁a")
    assert SentencePieceTokenizer.from_gguf(fake_reader(gguf_fields(**{"tokenizer.ggml.add_bos_token": None}))).add_bos
    no_bos = SentencePieceTokenizer.from_gguf(fake_reader(gguf_fields(**{"tokenizer.ggml.add_bos_token": False})))
    assert no_bos.add_bos is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.model": "gpt2"}, "SentencePiece \\('llama'\\) no GGUF; este é 'gpt2'"),
        ({"tokenizer.ggml.add_space_prefix": True}, "add_space_prefix = true"),
        ({"tokenizer.ggml.eos_token_id": None}, "metadado obrigatório 'tokenizer.ggml.eos_token_id'"),
    ],
)
def test_from_gguf_errors(change, message):
    with pytest.raises(ValueError, match=message):
        SentencePieceTokenizer.from_gguf(fake_reader(gguf_fields(**change)))
