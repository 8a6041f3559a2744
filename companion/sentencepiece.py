"""O tokenizador do Gemma 3: BPE no estilo SentencePiece, com recuo para bytes (cap. 5 — do Llama ao Gemma 3).

O GPT-2 e o SmolLM2 (``companion.tokenizers``, ``companion.pretrained.smollm2``) fazem BPE
sobre **bytes**, depois de cortar o texto em palavras com uma expressão regular. O
SentencePiece (Kudo e Richardson, 2018), usado pelo Llama 2 e pelo Gemma, faz BPE sobre
**caracteres** Unicode, e o texto não é cortado em palavras — o espaço é só mais um
caractere, escrito ``▁`` (U+2581). Cinco passos levam de um texto aos IDs:

1. **Tokens inteiros**: os tokens de controle (``<bos>``, ``<start_of_turn>``...) e os
   definidos pelo usuário (``\\n``, ``\\n\\n``, ``<table>``...) são procurados no texto
   original e viram um ID cada, sem passar pelo BPE (o mais à esquerda primeiro; entre
   os que começam no mesmo lugar, o mais longo);
2. **Normalização**: cada espaço vira ``▁``. O Gemma não põe um ``▁`` extra no começo
   do texto (``add_space_prefix = false`` no GGUF);
3. **Caracteres**: cada caractere do trecho é um símbolo; um caractere que não está no
   vocabulário vira os seus bytes em UTF-8, um token ``<0xNN>`` por byte (*byte fallback*:
   nenhum texto fica sem tokens, nenhum ``<unk>``);
4. **Fusões**: entre todos os pares vizinhos cuja junção é um token do vocabulário, junta
   o de maior prioridade — o que forma o token que vem **antes** na lista (no Gemma, a
   ordem da lista é a ordem em que o treinamento criou as fusões; a pontuação de cada
   peça comum é ``-posição``); empates, o par da esquerda. Repete até não haver fusão;
5. **IDs**: cada símbolo final é um token.

``decode`` faz o caminho de volta: ``▁`` vira espaço e as sequências de ``<0xNN>`` voltam
a ser os bytes do texto.

Detalhes que seguem o ``transformers`` (a referência dos testes, que o carrega do
mesmo GGUF): os blocos de espaços (``"  "``, ``"   "``...) estão gravados no GGUF com
espaços de verdade; aqui, como lá, eles voltam à grafia ``▁▁`` e são montados pelas
fusões (``▁`` + ``▁``...), não procurados inteiros; com mais de 31 espaços seguidos, o
SentencePiece original cortaria de outro jeito.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

from companion._checks import check_bool, is_int

__all__ = ["SentencePieceTokenizer", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE", "SPACE"]

SPACE = "\u2581"  # "▁": como o SentencePiece escreve o espaço

# Tipos de token do SentencePiece (os mesmos números de gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_KINDS = (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)


def _byte_piece(byte: int) -> str:
    """O token de recuo de um byte: 65 -> ``"<0x41>"``."""
    return f"<0x{byte:02X}>"


class SentencePieceTokenizer:
    """Tokenizador BPE do SentencePiece com recuo para bytes (o do Gemma 3; cap. 5).

    Args:
        pieces: o texto de cada token, na ordem dos IDs (o ID é a posição). Espaços
            podem vir como ``" "`` ou como ``"▁"``: internamente tudo vira ``"▁"``.
        kinds: o tipo de cada token (``NORMAL``, ``CONTROL``, ``USER_DEFINED``, ``BYTE``...).
        bos_id, eos_id, unk_id, pad_id: IDs dos tokens de início, fim, desconhecido e
            enchimento.
        add_bos: se o modelo espera ``<bos>`` no começo (o Gemma espera); é só uma
            informação: ``encode`` só o acrescenta com ``bos=True``.

    Attributes:
        n_vocab: tamanho do vocabulário.
        bos_id, eos_id, unk_id, pad_id, add_bos: como nos argumentos.

    Raises:
        ValueError: listas de tamanhos diferentes, tipos desconhecidos, tokens repetidos,
            IDs especiais fora do vocabulário ou sem os 256 tokens de byte.
    """

    def __init__(
        self,
        pieces: Sequence[str],
        kinds: Sequence[int],
        *,
        bos_id: int,
        eos_id: int,
        unk_id: int,
        pad_id: int,
        add_bos: bool = True,
    ) -> None:
        if len(pieces) != len(kinds) or not pieces:
            raise ValueError(
                f"pieces e kinds devem ter o mesmo tamanho (> 0); recebi {len(pieces)} e {len(kinds)}."
            )
        n = len(pieces)
        for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("unk_id", unk_id), ("pad_id", pad_id)):
            if not is_int(value) or not 0 <= value < n:
                raise ValueError(f"{name} deve ser um ID de token em [0, {n - 1}]; recebi {value!r}.")
        check_bool("add_bos", add_bos)
        self.n_vocab = n
        self.bos_id, self.eos_id, self.unk_id, self.pad_id = bos_id, eos_id, unk_id, pad_id
        self.add_bos = add_bos
        self._kinds = list(kinds)
        self._text = [piece.replace(SPACE, " ") for piece in pieces]  # o que decode escreve
        self._ids: dict[str, int] = {}  # peça (com ▁) -> ID: o vocabulário do BPE
        self._whole: dict[str, int] = {}  # tokens procurados inteiros no texto (passo 1)
        self._controls: set[int] = set()
        for token_id, (piece, kind) in enumerate(zip(pieces, kinds)):
            if kind not in _KINDS:
                raise ValueError(f"tipo de token {kind!r} (token {token_id}, {piece!r}) desconhecido.")
            spelled = piece.replace(" ", SPACE)
            if spelled in self._ids:
                raise ValueError(f"o token {piece!r} aparece duas vezes (IDs {self._ids[spelled]} e {token_id}).")
            self._ids[spelled] = token_id
            if kind == CONTROL:
                self._controls.add(token_id)
            # Blocos de espaços (gravados com " ") ficam para as fusões, como no transformers.
            if kind in (CONTROL, USER_DEFINED) and spelled == piece and piece:
                self._whole[piece] = token_id
        missing = [b for b in range(256) if _byte_piece(b) not in self._ids]
        if missing:
            raise ValueError(
                f"o vocabulário não tem os tokens de byte {_byte_piece(missing[0])}... ({len(missing)} faltando): "
                "sem eles não há recuo para bytes."
            )
        self._byte_ids = [self._ids[_byte_piece(b)] for b in range(256)]
        self._id_of_byte = {token_id: b for b, token_id in enumerate(self._byte_ids)}
        # Para achar tokens inteiros depressa: primeiro caractere -> tamanhos possíveis (maior primeiro).
        self._whole_lengths: dict[str, list[int]] = {}
        for piece in self._whole:
            self._whole_lengths.setdefault(piece[0], []).append(len(piece))
        for char, lengths in self._whole_lengths.items():
            self._whole_lengths[char] = sorted(set(lengths), reverse=True)

    # ------------------------------------------------------------------ a partir de um GGUF
    @classmethod
    def from_gguf(cls, reader: Any) -> SentencePieceTokenizer:
        """Monta o tokenizador com os metadados de um GGUF (``tokenizer.ggml.*``).

        Args:
            reader: um ``gguf.GGUFReader`` aberto (de ``companion.pretrained.gguf.open_gguf``).

        Returns:
            O tokenizador.

        Raises:
            ValueError: o GGUF não descreve um SentencePiece (``tokenizer.ggml.model`` diferente
                de ``"llama"``), põe um ``▁`` extra no começo (que não implementamos), ou
                falta um metadado.
        """
        from companion.pretrained.gguf import gguf_field

        model = gguf_field(reader, "tokenizer.ggml.model")
        if model != "llama":
            raise ValueError(f"esperava um tokenizador SentencePiece ('llama') no GGUF; este é {model!r}.")
        prefix = reader.fields.get("tokenizer.ggml.add_space_prefix")
        if prefix is not None and prefix.contents():
            raise ValueError(
                "este GGUF pede um ▁ extra no começo do texto (add_space_prefix = true); "
                "o tokenizador do curso segue o Gemma, que não o usa."
            )
        add_bos = reader.fields.get("tokenizer.ggml.add_bos_token")
        return cls(
            gguf_field(reader, "tokenizer.ggml.tokens"),
            gguf_field(reader, "tokenizer.ggml.token_type"),
            bos_id=int(gguf_field(reader, "tokenizer.ggml.bos_token_id")),
            eos_id=int(gguf_field(reader, "tokenizer.ggml.eos_token_id")),
            unk_id=int(gguf_field(reader, "tokenizer.ggml.unknown_token_id")),
            pad_id=int(gguf_field(reader, "tokenizer.ggml.padding_token_id")),
            add_bos=True if add_bos is None else bool(add_bos.contents()),
        )

    # ------------------------------------------------------------------ consultas
    def piece_to_id(self, piece: str) -> int:
        """O ID de um token escrito por extenso (``"<start_of_turn>"``, ``"▁casa"`` ou ``" casa"``).

        Raises:
            ValueError: o texto não é um token do vocabulário.
        """
        token_id = self._ids.get(piece.replace(" ", SPACE)) if isinstance(piece, str) else None
        if token_id is None:
            raise ValueError(f"{piece!r} não é um token do vocabulário.")
        return token_id

    def id_to_piece(self, token_id: int) -> str:
        """O texto de um token (espaços como ``▁``, bytes como ``<0xNN>``).

        Raises:
            ValueError: ID fora de ``[0, n_vocab)``.
        """
        self._check_id(token_id)
        return self._text[token_id].replace(" ", SPACE)

    def _check_id(self, token_id: object) -> None:
        if not is_int(token_id) or not 0 <= token_id < self.n_vocab:
            raise ValueError(f"ID de token fora do vocabulário: {token_id!r}; vão de 0 a {self.n_vocab - 1}.")

    # ------------------------------------------------------------------ codificar
    def encode(self, text: str, *, bos: bool = False, special: bool = True) -> list[int]:
        """Texto -> IDs.

        Args:
            text: o texto.
            bos: põe ``bos_id`` no começo (o Gemma espera um ``<bos>`` no início do texto).
            special: reconhece tokens de controle escritos no texto (``"<eos>"`` vira o ID
                1, como no ``transformers``). Com ``False`` eles são texto comum — o certo
                para o que um usuário digita numa conversa.

        Returns:
            Lista de IDs.

        Raises:
            TypeError: ``text`` não é ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode espera um texto (str); recebi {type(text).__name__}.")
        check_bool("bos", bos)
        check_bool("special", special)
        ids = [self.bos_id] if bos else []
        for segment, token_id in self._split_whole(text, special):
            if token_id is not None:
                ids.append(token_id)
            else:
                ids += self._bpe(segment.replace(" ", SPACE))
        return ids

    def _split_whole(self, text: str, special: bool) -> Iterable[tuple[str, int | None]]:
        """Passo 1: corta o texto nos tokens procurados inteiros.

        Devolve pares ``(trecho, ID)``: ``ID`` é ``None`` para os trechos que vão ao BPE.
        """
        lengths, whole = self._whole_lengths, self._whole
        start = pos = 0
        while pos < len(text):
            found = None
            for size in lengths.get(text[pos], ()):
                token_id = whole.get(text[pos : pos + size])
                if token_id is not None and (special or token_id not in self._controls):
                    found = size, token_id
                    break
            if found is None:
                pos += 1
                continue
            if start < pos:
                yield text[start:pos], None
            yield text[pos : pos + found[0]], found[1]
            pos += found[0]
            start = pos
        if start < len(text):
            yield text[start:], None

    def _bpe(self, text: str) -> list[int]:
        """Passos 3 a 5 num trecho já normalizado (espaços como ``▁``)."""
        ids = self._ids
        # Símbolos: o texto de cada um (None = token de byte, que não se funde) e o ID.
        symbols: list[str | None] = []
        symbol_ids: list[int] = []
        for char in text:
            token_id = ids.get(char)
            if token_id is not None:
                symbols.append(char)
                symbol_ids.append(token_id)
            else:  # recuo para bytes: um token <0xNN> por byte do caractere
                for byte in char.encode("utf-8"):
                    symbols.append(None)
                    symbol_ids.append(self._byte_ids[byte])
        n = len(symbols)
        if n < 2:
            return symbol_ids
        # Lista ligada dos símbolos vivos; um símbolo fundido ao vizinho da esquerda morre.
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1

        def push(left: int, right: int) -> None:
            """Põe o par (left, right) na fila se a junção for um token."""
            a, b = symbols[left], symbols[right]
            if a is None or b is None:
                return
            merged_id = ids.get(a + b)
            if merged_id is not None:
                # prioridade: o token que vem antes na lista; depois a peça da esquerda mais
                # longa (a ordem das fusões do transformers); depois o par mais à esquerda
                heapq.heappush(heap, (merged_id, -len(a), left, right, a + b))

        heap: list[tuple[int, int, int, int, str]] = []
        for i in range(n - 1):
            push(i, i + 1)
        while heap:
            merged_id, _, left, right, merged = heapq.heappop(heap)
            # par vencido: um dos dois já foi fundido com outro vizinho
            if nxt[left] != right or symbols[left] is None or symbols[right] is None:
                continue
            if symbols[left] + symbols[right] != merged:
                continue
            symbols[left], symbol_ids[left] = merged, merged_id
            symbols[right] = None
            symbol_ids[right] = -1  # morto
            nxt[left] = nxt[right]
            if nxt[right] != -1:
                prev[nxt[right]] = left
            if prev[left] != -1:
                push(prev[left], left)
            if nxt[left] != -1:
                push(left, nxt[left])
        return [token_id for token_id in symbol_ids if token_id != -1]

    # ------------------------------------------------------------------ decodificar
    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """IDs -> texto.

        Args:
            ids: os IDs (lista, tupla... de inteiros em ``[0, n_vocab)``).
            skip_special: omite os tokens de controle (``<bos>``, ``<eos>``...); com
                ``False`` eles aparecem por extenso.

        Returns:
            O texto. Bytes que não formam UTF-8 válido viram ``"�"`` (um por byte).

        Raises:
            ValueError: ID fora do vocabulário.
        """
        out: list[str] = []
        pending = bytearray()  # bytes de tokens <0xNN> seguidos

        def flush() -> None:
            if pending:
                try:
                    out.append(pending.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append("\ufffd" * len(pending))
                pending.clear()

        for token_id in ids:
            self._check_id(token_id)
            byte = self._id_of_byte.get(token_id)
            if byte is not None:
                pending.append(byte)
                continue
            flush()
            if not (skip_special and token_id in self._controls):
                out.append(self._text[token_id])
        flush()
        return "".join(out)

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(n_vocab={self.n_vocab}, bos_id={self.bos_id}, eos_id={self.eos_id})"
