"""Dados: o corpus do curso (cap. 1) e os carregadores de janelas de tokens (cap. 2)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from companion.assets import asset_path

CORPUS_FILE = "corpus_ptbr.txt"


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


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} deve ser um inteiro positivo; recebi {value!r}.")
    if value <= 0:
        raise ValueError(f"{name} deve ser um inteiro positivo (>= 1); recebi {value}.")


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
        _check_positive_int(max_length, "max_length")
        if stride is None:
            stride = max_length
        _check_positive_int(stride, "stride")
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
    _check_positive_int(batch_size, "batch_size")
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
