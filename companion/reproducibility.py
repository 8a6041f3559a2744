"""Reprodutibilidade: sementes, *threads* e a forma de imprimir números (cap. 1).

O livro é testado célula a célula (nbval compara cada saída guardada com uma
execução nova), então cada notebook começa fixando tudo o que poderia variar
entre duas execuções (``companion.book.setup`` chama ``setup`` e aplica o estilo
das figuras); scripts e testes usam ``setup`` diretamente.
"""

from __future__ import annotations

import os
import random

from companion._checks import check_int

DEFAULT_SEED = 123


def setup(seed: int = DEFAULT_SEED, threads: int = 1, precision: int = 4) -> None:
    """Deixa a sessão reprodutível.

    Args:
        seed: semente usada por ``random``, NumPy e PyTorch.
        threads: número de *threads* do PyTorch na CPU. Com 1, dois computadores
            iguais dão resultados idênticos bit a bit; com mais, a ordem das somas
            muda e os números podem diferir na 4.ª casa decimal.
        precision: casas decimais ao imprimir tensores e arrays.

    Raises:
        ValueError: se ``seed`` for negativa, ``threads`` < 1 ou ``precision`` < 0.
    """
    check_int("seed", seed, 0)
    check_int("threads", threads, 1)
    check_int("precision", precision, 0)

    # Sem isto, as threads do OpenMP ficam girando à espera de trabalho e, em máquinas
    # de 2 núcleos, deixam tudo várias vezes mais lento. Só vale se definido antes de
    # importar o torch; por isso usamos setdefault e não mexemos se já existir.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)

    torch.set_printoptions(precision=precision, sci_mode=False)
    np.set_printoptions(precision=precision, suppress=True)
