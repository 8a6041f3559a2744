"""Conversar com um modelo ajustado para chat: o formato ChatML (cap. 5 e 6).

O SmolLM2-135M-Instruct foi ajustado com conversas escritas assim::

    <|im_start|>system
    Você é um assistente...<|im_end|>
    <|im_start|>user
    Qual é a capital do Brasil?<|im_end|>
    <|im_start|>assistant

e aprendeu a responder depois da última linha, terminando em ``<|im_end|>``. Este módulo
escreve a conversa (``chat_prompt``), codifica-a com os marcadores como tokens especiais
(``encode_chat``) e gera a resposta com o ``generate`` de sempre (``chat_reply``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tiktoken
import torch
from torch import nn

from companion.generation import generate

__all__ = ["SMOLLM2_SYSTEM_PROMPT", "chat_prompt", "encode_chat", "chat_reply"]

# O texto de sistema que o modelo do SmolLM2 usa quando a conversa não traz um
# (está no modelo de conversa, ``tokenizer.chat_template``, do próprio GGUF).
SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_CHAT_ROLES = ("system", "user", "assistant")


def _check_messages(messages: object) -> list[dict[str, str]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(
            "messages deve ser uma lista não vazia de dicionários {'role': ..., 'content': ...}; "
            f"recebi {type(messages).__name__}."
        )
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise ValueError(
                f"messages[{i}] deve ser um dicionário com exatamente as chaves 'role' e 'content'; recebi {message!r}."
            )
        role, content = message["role"], message["content"]
        if role not in _CHAT_ROLES:
            raise ValueError(f"messages[{i}]['role'] deve ser um de {list(_CHAT_ROLES)}; recebi {role!r}.")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}]['content'] deve ser um texto (str); recebi {type(content).__name__}.")
        checked.append({"role": role, "content": content})
    return checked


def _chat_parts(messages: object, add_generation_prompt: bool) -> list[tuple[str, bool]]:
    """O ChatML em pedaços ``(texto, é_controle)``: o molde é controle, o conteúdo não."""
    checked = _check_messages(messages)
    if checked[0]["role"] != "system":
        checked.insert(0, {"role": "system", "content": SMOLLM2_SYSTEM_PROMPT})
    parts: list[tuple[str, bool]] = []
    for message in checked:
        parts += [("<|im_start|>", True), (message["role"] + "\n", False), (message["content"], False)]
        parts += [("<|im_end|>", True), ("\n", False)]
    if add_generation_prompt:
        parts += [("<|im_start|>", True), ("assistant\n", False)]
    return parts


def chat_prompt(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True) -> str:
    """Escreve uma conversa no formato ChatML do SmolLM2-Instruct.

    Cada mensagem vira ``<|im_start|>papel\\nconteúdo<|im_end|>\\n``. Se a primeira não
    for de sistema, entra antes a de sistema padrão do modelo (``SMOLLM2_SYSTEM_PROMPT``),
    como no modelo de conversa guardado no GGUF. Com ``add_generation_prompt`` o texto
    termina em ``<|im_start|>assistant\\n``: a vez do modelo.

    Args:
        messages: lista de ``{"role": "system" | "user" | "assistant", "content": texto}``.
        add_generation_prompt: acrescenta a abertura da resposta do assistente.

    Returns:
        O texto do *prompt*, com os tokens especiais escritos por extenso.

    Raises:
        ValueError: lista vazia, papel desconhecido ou mensagem mal formada.
    """
    return "".join(text for text, _ in _chat_parts(messages, add_generation_prompt))


def encode_chat(
    tokenizer: tiktoken.Encoding,
    messages: Sequence[Mapping[str, str]],
    add_generation_prompt: bool = True,
) -> list[int]:
    """Os IDs do ``chat_prompt``: o molde vira tokens especiais; o conteúdo, texto comum.

    Se alguém digitar ``<|im_end|>`` numa mensagem, isso é codificado como texto comum
    e não encerra a mensagem — o usuário não consegue forjar o molde da conversa.

    Args:
        tokenizer: o de ``smollm2_tokenizer`` / ``load_smollm2``.
        messages: como em ``chat_prompt``.
        add_generation_prompt: como em ``chat_prompt``.

    Returns:
        Lista de IDs.

    Raises:
        ValueError: mensagens mal formadas (veja ``chat_prompt``).
    """
    ids: list[int] = []
    for text, is_control in _chat_parts(messages, add_generation_prompt):
        if is_control:
            ids.append(tokenizer.encode_single_token(text))
        else:
            ids += tokenizer.encode(text, disallowed_special=())
    return ids


def chat_reply(
    model: nn.Module,
    tokenizer: tiktoken.Encoding,
    messages: str | Sequence[Mapping[str, str]],
    max_new_tokens: int = 64,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    repetition_penalty: float = 1.0,
) -> str:
    """A resposta do modelo a uma conversa (ou a uma pergunta só), como texto.

    Monta o ChatML (``encode_chat``), gera até ``<|im_end|>`` ou ``<|endoftext|>`` (ou até
    ``max_new_tokens``) e devolve só o texto novo, sem os tokens de fim.

    Args:
        model, tokenizer: de ``load_smollm2``.
        messages: a lista de mensagens, ou um texto (vira ``[{"role": "user", "content": texto}]``).
        max_new_tokens: limite de tokens da resposta.
        temperature, top_k, top_p: como em ``companion.generation.generate`` (o padrão, 0, é a escolha gulosa).
        seed: semente do sorteio (só importa com ``temperature > 0``).
        use_cache: usa o KV cache.
        repetition_penalty: > 1 desestimula repetir tokens (1 = sem penalidade).

    Returns:
        O texto da resposta.

    Raises:
        ValueError: mensagens mal formadas ou parâmetros de geração inválidos.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    ids = encode_chat(tokenizer, messages)
    stop = [tokenizer.encode_single_token(t) for t in ("<|im_end|>", "<|endoftext|>")]
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.tok_emb.weight.device).manual_seed(seed)
    idx = torch.tensor([ids], device=model.tok_emb.weight.device)
    out = generate(
        model,
        idx,
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_id=stop,
        use_cache=use_cache,
        generator=generator,
        repetition_penalty=repetition_penalty,
    )
    new = [t for t in out[0, len(ids) :].tolist() if t not in stop]
    return tokenizer.decode(new)
