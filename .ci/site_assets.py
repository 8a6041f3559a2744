"""Gera os arquivos da página "O modelo no seu navegador" (cap. 5) antes do build do site.

O modelo do cap. 5 em ONNX, o tokenizador dele, o vocab.bpe do GPT-2 e os dados dos três
exploradores vão para book/_site_static/generated/ (fora do git). Veja
companion/book/site_assets.py. Roda em ~20 s; não refaz nada se as entradas não mudaram.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # o companion deste repositório, mesmo sem o pip install -e

import torch

from companion.book.site_assets import write_site_assets

if __name__ == "__main__":
    torch.set_num_threads(1)
    dest = ROOT / "book" / "_site_static" / "generated"
    made = write_site_assets(dest, force="--force" in sys.argv[1:])
    print(f"Arquivos da página do navegador em {dest}" + ("" if made else " (já em dia)"))
