"""A história do conjunto de mensagens do cap. 6: os lotes em que ele foi escrito.

O arquivo ``companion/assets/finetune/mensagens.jsonl`` foi escrito em cinco lotes (o
README dos dados conta a história de cada um). O capítulo desenha a proporção de golpes
por lote e os testes refazem o sorteio das divisões de cada lote; o resto do pacote não
precisa saber disso.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MessageBatch", "MESSAGE_BATCHES"]


@dataclass(frozen=True)
class MessageBatch:
    """Um lote de ``mensagens.jsonl``: linhas escritas juntas e divididas com o mesmo sorteio.

    Args:
        start: índice (a partir de 0) da primeira mensagem do lote.
        end: índice logo depois da última (``None`` = até o fim do arquivo).
        seed: semente do ``random.Random`` que sorteou as divisões do lote.
        train_fraction, val_fraction: frações de ``treino`` e de ``validacao`` em cada rótulo;
            o resto é ``teste``.
    """

    start: int
    end: int | None
    seed: int
    train_fraction: float
    val_fraction: float

    def rows(self, messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
        """As mensagens deste lote, de uma lista com o arquivo inteiro (``load_messages()``)."""
        return list(messages[self.start : self.end])


# Os cinco lotes do arquivo de mensagens, na ordem em que foram escritos (o README dos dados conta
# a história de cada um). Os quatro primeiros foram divididos 80/10/10; o quinto, 60/20/20, para
# crescer a validação e o teste.
MESSAGE_BATCHES: tuple[MessageBatch, ...] = (
    MessageBatch(0, 1131, 123, 0.8, 0.1),
    MessageBatch(1131, 1509, 2026, 0.8, 0.1),
    MessageBatch(1509, 2611, 2027, 0.8, 0.1),
    MessageBatch(2611, 3731, 2028, 0.8, 0.1),
    MessageBatch(3731, None, 2029, 0.6, 0.2),
)
