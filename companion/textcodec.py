"""Um jeito só de transformar texto em IDs, qualquer que seja o modelo (cap. 6).

O ajuste fino do cap. 6 funciona com dois tokenizadores diferentes:

- o do SmolLM2 (um ``tiktoken.Encoding``, BPE de bytes como o do GPT-2), que não põe
  nada no começo do texto e termina documentos em ``<|endoftext|>``;
- o do Gemma 3 (``companion.sentencepiece.SentencePieceTokenizer``), que espera um
  ``<bos>`` no começo de todo texto e termina documentos em ``<eos>``.

O molde das instruções, os pares da DPO e as mensagens do classificador não precisam
saber qual é qual: pedem um ``TextCodec`` a ``text_codec(tokenizer)`` e usam só
``encode`` (texto comum, sem interpretar tokens de controle escritos nele), ``bos``
(o que vai antes do primeiro token), ``eos_id`` (onde uma resposta termina) e
``stop_ids`` (onde a geração para).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["TextCodec", "text_codec"]


@dataclass(frozen=True)
class TextCodec:
    """O que o ajuste fino precisa saber de um tokenizador.

    Attributes:
        tokenizer: o tokenizador original (``tiktoken.Encoding`` ou ``SentencePieceTokenizer``).
        bos: os IDs que abrem um texto (``()`` no SmolLM2, ``(2,)`` — ``<bos>`` — no Gemma 3).
        eos_id: o token que termina uma resposta (o fim de documento do modelo).
        stop_ids: os tokens em que a geração para (``eos_id`` e, se houver, o fim de turno).
        pad_id: um ID para completar lotes (os alvos dessas posições são ignorados).
    """

    tokenizer: Any
    bos: tuple[int, ...]
    eos_id: int
    stop_ids: tuple[int, ...]
    pad_id: int

    def encode(self, text: str) -> list[int]:
        """Texto -> IDs, sem ``bos`` e tratando ``"<eos>"`` escrito no texto como texto comum."""
        if not isinstance(text, str):
            raise TypeError(f"encode espera um texto (str); recebi {type(text).__name__}.")
        if hasattr(self.tokenizer, "encode_single_token"):  # tiktoken
            return self.tokenizer.encode(text, disallowed_special=())
        return self.tokenizer.encode(text, special=False)

    def decode(self, ids: Sequence[int]) -> str:
        """IDs -> texto, sem os tokens de parada e sem ``bos``."""
        skip = set(self.stop_ids) | set(self.bos)
        return self.tokenizer.decode([int(t) for t in ids if int(t) not in skip])

    def document(self, text: str) -> list[int]:
        """Um texto como o modelo o veria no começo de um documento: ``bos`` + ``encode``."""
        return list(self.bos) + self.encode(text)


def text_codec(tokenizer: Any) -> TextCodec:
    """O ``TextCodec`` de um tokenizador do curso (SmolLM2 ou Gemma 3).

    Args:
        tokenizer: um ``tiktoken.Encoding`` com ``<|endoftext|>`` (o do SmolLM2) ou um
            ``companion.sentencepiece.SentencePieceTokenizer`` (o do Gemma 3); um
            ``TextCodec`` volta como está.

    Raises:
        TypeError: outro tipo de tokenizador (a mensagem diz quais são aceitos).
    """
    if isinstance(tokenizer, TextCodec):
        return tokenizer
    if hasattr(tokenizer, "encode_single_token"):
        specials = getattr(tokenizer, "special_tokens_set", set())
        if "<|endoftext|>" not in specials:
            raise TypeError("o tokenizador tiktoken não tem <|endoftext|>; use o do SmolLM2 (companion.load_smollm2).")
        eos = tokenizer.encode_single_token("<|endoftext|>")
        stops = [eos] + [tokenizer.encode_single_token(t) for t in ("<|im_end|>",) if t in specials]
        return TextCodec(tokenizer, (), eos, tuple(stops), eos)
    if all(hasattr(tokenizer, name) for name in ("bos_id", "eos_id", "pad_id", "piece_to_id")):
        stops = [tokenizer.eos_id]
        try:
            stops.append(tokenizer.piece_to_id("<end_of_turn>"))
        except (KeyError, ValueError):
            pass
        bos = (tokenizer.bos_id,) if getattr(tokenizer, "add_bos", True) else ()
        return TextCodec(tokenizer, bos, tokenizer.eos_id, tuple(stops), tokenizer.pad_id)
    raise TypeError(
        f"tokenizador não reconhecido ({type(tokenizer).__name__}); use o do SmolLM2 (tiktoken, de "
        "companion.load_smollm2) ou o do Gemma 3 (SentencePieceTokenizer, de companion.load_gemma3)."
    )
