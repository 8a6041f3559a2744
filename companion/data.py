"""Dados: o corpus do curso (cap. 1), os carregadores de janelas de tokens (cap. 2) e os
conjuntos rotulados em JSONL do ajuste fino (cap. 6)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from companion._checks import check_int
from companion.assets import asset_path

CORPUS_FILE = "corpus_ptbr.txt"
# As divisões fixas dos conjuntos de ajuste fino (a chave "divisao" de cada linha).
SPLITS: tuple[str, ...] = ("treino", "validacao", "teste")


def load_corpus(verify: bool = True) -> str:
    """Devolve o corpus do curso: crônicas, contos, fábulas e causos originais em pt-BR.

    O texto foi escrito para o curso (licença CC BY 4.0; veja
    ``companion/assets/README.md``) e é conferido por sha256 antes de ser lido.

    Args:
        verify: confere o sha256 do arquivo (deixe ``True``; só desligue para depurar).

    Returns:
        O texto inteiro, em UTF-8, como uma única ``str``.
    """
    return asset_path(CORPUS_FILE, verify=verify).read_text(encoding="utf-8")


ENGLISH_SAMPLE_FILE = "ingles_amostra.txt"


def load_english_sample(verify: bool = True) -> str:
    """Um texto curto em inglês: a fábula da onça e do tamanduá, do corpus, vertida para o inglês.

    O cap. 2 o usa para comparar quantos tokens o mesmo conteúdo custa em português e
    em inglês. Escrito para o curso (CC BY 4.0) e conferido por sha256 como o corpus.

    Args:
        verify: confere o sha256 do arquivo.

    Returns:
        O texto, em UTF-8.
    """
    return asset_path(ENGLISH_SAMPLE_FILE, verify=verify).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- cap. 2: janelas de tokens
def _encode_with_specials(tokenizer: Any, text: str) -> list[int]:
    """Codifica ``text`` reconhecendo ``<|endoftext|>`` quando o tokenizador sabe fazê-lo.

    ``tiktoken.Encoding`` e ``BPETokenizer`` recebem ``allowed_special``; o
    ``SimpleTokenizer`` reconhece os tokens especiais do seu vocabulário sozinho.
    """
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(
            f"tokenizer deve ter um método encode(texto) -> list[int]; recebi {type(tokenizer).__name__}."
        )
    try:
        accepts_special = "allowed_special" in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):  # assinatura indisponível (função em C, por exemplo)
        accepts_special = False
    if accepts_special:
        return list(tokenizer.encode(text, allowed_special="all"))
    return list(tokenizer.encode(text))


class GPTDataset(Dataset):
    """Janelas deslizantes de tokens: pares (entrada, alvo) para treinar um GPT (cap. 2).

    O texto inteiro vira uma sequência de IDs ``x_0, x_1, ..., x_{N-1}``. A janela ``i``
    começa no token ``i * stride`` e tem ``max_length`` tokens; o alvo é a mesma janela
    deslocada um token para a frente, porque em cada posição o modelo deve prever o
    token seguinte::

        entrada: x[s : s + max_length]
        alvo:    x[s + 1 : s + max_length + 1]      com s = i * stride

    Há ``(N - max_length - 1) // stride + 1`` janelas; com ``stride == max_length`` elas
    não se sobrepõem, com ``stride < max_length`` se sobrepõem, com ``stride > max_length``
    alguns tokens ficam de fora. Os últimos tokens que não completam uma janela são
    descartados.

    Args:
        data: o texto (``str``, exige ``tokenizer``) ou os IDs já prontos (lista ou tensor 1-D).
        tokenizer: qualquer objeto com ``encode(texto) -> list[int]`` (``SimpleTokenizer``,
            ``BPETokenizer``, ``gpt2_tokenizer()``...). ``<|endoftext|>`` no texto é
            reconhecido como token especial.
        max_length: tokens por janela (o tamanho do contexto que o modelo verá).
        stride: passo entre o início de duas janelas (padrão: ``max_length``, sem sobreposição).

    Cada item é uma tupla ``(entrada, alvo)`` de tensores ``int64`` de formato ``(max_length,)``.

    Raises:
        TypeError: se ``data`` for texto sem ``tokenizer``, ou tiver tipo inválido.
        ValueError: se ``max_length``/``stride`` não forem positivos, ou se o texto tiver
            menos de ``max_length + 1`` tokens (não cabe uma janela com o seu alvo).
    """

    def __init__(
        self,
        data: str | Sequence[int] | torch.Tensor,
        tokenizer: Any = None,
        max_length: int = 256,
        stride: int | None = None,
    ) -> None:
        check_int("max_length", max_length, 1)
        if stride is None:
            stride = max_length
        check_int("stride", stride, 1)
        if isinstance(data, str):
            if tokenizer is None:
                raise TypeError("data é um texto: passe também um tokenizer para convertê-lo em IDs.")
            ids = torch.tensor(_encode_with_specials(tokenizer, data), dtype=torch.long)
        elif isinstance(data, torch.Tensor):
            if data.ndim != 1 or data.is_floating_point() or data.is_complex():
                raise TypeError(
                    f"data deve ser um tensor 1-D de inteiros (os IDs); recebi formato {tuple(data.shape)} "
                    f"e dtype {data.dtype}."
                )
            ids = data.to(torch.long)
        elif isinstance(data, Sequence):
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in data):
                raise TypeError("data deve ser um texto ou uma sequência de IDs inteiros.")
            ids = torch.tensor(list(data), dtype=torch.long)
        else:
            raise TypeError(f"data deve ser um texto (str) ou uma sequência de IDs; recebi {type(data).__name__}.")

        n_tokens = ids.numel()
        if n_tokens < max_length + 1:
            raise ValueError(
                f"O texto tem só {n_tokens} tokens, mas uma janela precisa de max_length + 1 = {max_length + 1} "
                "(a entrada e o alvo deslocado um token). Use um texto maior ou um max_length menor."
            )
        self.token_ids: torch.Tensor = ids  # (N,)
        self.max_length = max_length
        self.stride = stride
        self._n_windows = (n_tokens - max_length - 1) // stride + 1

    def __len__(self) -> int:
        return self._n_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index < 0:
            index += self._n_windows
        if not 0 <= index < self._n_windows:
            raise IndexError(f"Janela {index} não existe: há {self._n_windows} janelas (0 a {self._n_windows - 1}).")
        start = index * self.stride
        window = self.token_ids[start : start + self.max_length + 1]  # (max_length + 1,)
        return window[:-1], window[1:]  # entrada e alvo, cada um (max_length,)


def create_dataloader(
    text: str,
    tokenizer: Any,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
) -> DataLoader:
    """Um ``DataLoader`` de lotes (entrada, alvo) tirados de janelas deslizantes do texto (cap. 2).

    Args:
        text: o texto de treino.
        tokenizer: o tokenizador (veja ``GPTDataset``).
        batch_size: janelas por lote.
        max_length: tokens por janela.
        stride: passo entre janelas (padrão: ``max_length``).
        shuffle: embaralha a ordem das janelas a cada época.
        drop_last: descarta o último lote se ele vier incompleto.
        num_workers: processos auxiliares de carregamento (0 = no processo principal,
            o melhor para textos pequenos como o do curso).
        seed: se dada, o embaralhamento usa um gerador próprio com essa semente (a mesma
            ordem sempre, sem depender do estado global do PyTorch).

    Returns:
        Um ``torch.utils.data.DataLoader`` cujos lotes são ``(entradas, alvos)``, dois
        tensores ``int64`` de formato ``(batch_size, max_length)``.

    Raises:
        ValueError: para tamanhos não positivos, ``num_workers`` negativo, texto curto
            demais, ou ``drop_last=True`` com menos janelas do que ``batch_size`` (não
            sairia nenhum lote).
    """
    _check_text_arg(text)
    check_int("batch_size", batch_size, 1)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers deve ser um inteiro >= 0; recebi {num_workers!r}.")
    dataset = GPTDataset(text, tokenizer, max_length=max_length, stride=stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"Há só {len(dataset)} janelas e batch_size={batch_size} com drop_last=True: nenhum lote sairia. "
            "Diminua batch_size, max_length ou stride, ou use drop_last=False."
        )
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
    )


def _check_text_arg(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text deve ser um texto (str); recebi {type(text).__name__}.")


def split_datasets(text: str, tokenizer: Any, val_fraction: float, context_length: int) -> tuple[Any, Any]:
    """Tokeniza ``text`` e separa o final para validação: ``(treino, validação)`` em janelas.

    Os primeiros ``1 - val_fraction`` dos tokens viram o conjunto de treino; o resto, o de
    validação. Cada um é um ``GPTDataset`` de janelas de ``context_length`` tokens sem
    sobreposição. É a divisão que o comando ``train`` usa (e que o capítulo refaz para
    conferir os artefatos).

    Args:
        text: o texto inteiro.
        tokenizer: com ``encode(texto, allowed_special="all")`` (um ``tiktoken.Encoding``).
        val_fraction: fração final do texto para validação, em ``(0, 1)``.
        context_length: tokens por janela.

    Returns:
        ``(train_data, val_data)``, dois ``GPTDataset``.

    Raises:
        ValueError: ``val_fraction`` fora de ``(0, 1)`` ou uma das partes curta demais.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction deve estar em (0, 1); recebi {val_fraction!r}.")
    ids = torch.tensor(tokenizer.encode(text, allowed_special="all"), dtype=torch.long)  # (N,)
    n_train = int(len(ids) * (1 - val_fraction))
    if min(n_train, len(ids) - n_train) < context_length + 1:
        raise ValueError(
            f"texto curto demais para o contexto {context_length}: a parte de treino tem {n_train} tokens "
            f"e a de validação {len(ids) - n_train} (cada uma precisa de ao menos {context_length + 1}). "
            "Use um texto maior, um contexto menor ou outra fração de validação."
        )
    return GPTDataset(ids[:n_train], max_length=context_length), GPTDataset(ids[n_train:], max_length=context_length)


# --------------------------------------------------------------------------- cap. 6: conjuntos em JSONL
def load_jsonl(
    source: str | Path,
    fields: Mapping[str, Collection[str] | None],
    split: str | None = None,
    *,
    may_be_empty: Collection[str] = (),
    packaged: bool = True,
) -> list[dict[str, str]]:
    """Lê um conjunto rotulado em JSONL, conferindo cada linha, e filtra pela divisão.

    Cada linha é um objeto JSON com, ao menos, as chaves de ``fields`` (todas com texto) e
    ``"divisao"`` (uma de ``SPLITS``). Um arquivo do pacote é conferido por sha256 antes.

    Args:
        source: nome de um arquivo do pacote (``"finetune/mensagens.jsonl"``) ou, com
            ``packaged=False``, o caminho de um arquivo qualquer no mesmo formato.
        fields: chave obrigatória -> valores permitidos (``None`` = qualquer texto não vazio).
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todas).
        may_be_empty: chaves de texto que podem vir vazias (a ``"entrada"`` de uma instrução).
        packaged: ``source`` é um arquivo do pacote (padrão) ou um caminho.

    Returns:
        As linhas, na ordem do arquivo.

    Raises:
        ValueError: divisão desconhecida ou linha mal formada (a mensagem diz qual linha e por quê).
        FileNotFoundError: o arquivo não existe.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split deve ser um de {list(SPLITS)} ou None; recebi {split!r}.")
    path = asset_path(str(source)) if packaged else Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"arquivo JSONL não encontrado: {path}.")
    required = {**fields, "divisao": SPLITS}
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}, linha {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: não é JSON válido ({error}).") from error
        missing = [key for key in required if not isinstance(row, dict) or key not in row]
        if missing:
            names = [repr(key) for key in required]
            listed = ", ".join(names[:-1]) + f" e {names[-1]}"
            raise ValueError(f"{where}: cada linha deve ter as chaves {listed}; falta {', '.join(map(repr, missing))}.")
        for key, allowed in required.items():
            value = row[key]
            if allowed is not None:
                if value not in allowed:
                    raise ValueError(f"{where}: {key!r} deve ser um de {list(allowed)}; recebi {value!r}.")
            elif not isinstance(value, str) or (not value.strip() and key not in may_be_empty):
                raise ValueError(f"{where}: {key!r} deve ser um texto{'' if key in may_be_empty else ' não vazio'}.")
        if split is None or row["divisao"] == split:
            rows.append(row)
    return rows
