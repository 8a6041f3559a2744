// LLM do Zero — o tokenizador BPE em nível de bytes, em JavaScript (cap. 2 e cap. 5).
//
// A mesma regra de companion.tokenizers.BPETokenizer (e do tiktoken):
//   1. o texto é cortado em pedaços por uma expressão regular (a "pré-divisão");
//   2. cada pedaço vira bytes UTF-8; se o pedaço inteiro já é um token, use-o;
//   3. senão, junte repetidamente o par vizinho cujo resultado é o token de menor ID
//      (o mais antigo), até não haver junção possível.
// Serve para o BPE do curso (lido do tokenizer.json do treino) e para o do GPT-2 (lido
// do vocab.bpe da OpenAI). Os testes conferem, texto a texto, que os IDs são os do Python.
//
// Representação: um token é uma "string binária" (um caractere por byte, códigos 0-255),
// o que permite usar um Map comum de bytes -> ID.
(function (root) {
  "use strict";

  const LLMdoZero = (root.LLMdoZero = root.LLMdoZero || {});
  if (LLMdoZero.BPETokenizer) return; // já carregado por outra célula da página

  // As expressões de pré-divisão, traduzidas do módulo `regex` do Python para o JavaScript.
  // O \s do Python (e do tiktoken) é a propriedade Unicode White_Space; o \s do JavaScript
  // é outra lista (tem U+FEFF e não tem U+0085), por isso escrevemos \p{White_Space}.
  // Os quantificadores possessivos do GPT-2 (\p{L}++) viram gulosos: como nada vem depois
  // deles em cada alternativa, casam exatamente os mesmos pedaços.
  const WS = "\\p{White_Space}";
  const NOT_WS = "\\P{White_Space}";
  const PATTERNS = {
    // companion.tokenizers.DEFAULT_PATTERN (o BPE do curso)
    " ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+":
      ` ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|${WS}+(?!${NOT_WS})|${WS}+`,
    // companion.tokenizers.GPT2_PATTERN (o do GPT-2, como o tiktoken o escreve)
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s":
      `'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|${WS}+$|${WS}+(?!${NOT_WS})|${WS}`,
  };
  const GPT2_PATTERN =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s";

  const utf8 = new TextEncoder();

  /** Texto -> string binária com os bytes UTF-8. */
  function toBinary(text) {
    const bytes = utf8.encode(text);
    let out = "";
    for (let i = 0; i < bytes.length; i++) out += String.fromCharCode(bytes[i]);
    return out;
  }

  /** String binária -> Uint8Array. */
  function binaryToBytes(binary) {
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function escapeRegExp(text) {
    return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }

  class BPETokenizer {
    /**
     * @param {string[]} vocab  ID -> bytes do token (string binária), só os tokens normais
     * @param {string} pattern  a expressão de pré-divisão, como o Python a escreve
     * @param {Object<string, number>} specialTokens  texto -> ID (ex.: {"<|endoftext|>": 1023})
     */
    constructor(vocab, pattern, specialTokens) {
      const jsPattern = PATTERNS[pattern];
      if (jsPattern === undefined) {
        throw new Error("expressão de pré-divisão desconhecida (só a do curso e a do GPT-2 foram traduzidas): " + pattern);
      }
      this.vocab = vocab;
      this.ranks = new Map(vocab.map((token, id) => [token, id]));
      this.splitter = new RegExp(jsPattern, "gu");
      this.specialTokens = Object.assign({}, specialTokens);
      this.specialById = new Map(Object.entries(this.specialTokens).map(([t, id]) => [id, t]));
      const names = Object.keys(this.specialTokens);
      this.specialSplitter = names.length ? new RegExp("(" + names.map(escapeRegExp).join("|") + ")") : null;
      this.vocabSize = vocab.length + names.length;
      this.cache = new Map();
    }

    /** O BPE do curso, a partir do conteúdo de um tokenizer.json (BPETokenizer.save). */
    static fromCourseJSON(data) {
      if (!data || data.format !== "companion-bpe" || data.version !== 1) {
        throw new Error('não é um tokenizer.json do curso (falta "format": "companion-bpe", versão 1)');
      }
      const vocab = [];
      for (let b = 0; b < 256; b++) vocab.push(String.fromCharCode(b)); // IDs 0-255: os bytes
      for (const [a, b] of data.merges) vocab.push(vocab[a] + vocab[b]); // a junção i cria o ID 256 + i
      const specials = {};
      (data.special_tokens || []).forEach((t, j) => (specials[t] = vocab.length + j));
      return new BPETokenizer(vocab, data.pattern, specials);
    }

    /**
     * O BPE do GPT-2, a partir do vocab.bpe da OpenAI (companion.tokenizers.gpt2_mergeable_ranks).
     * No GPT-2 os IDs 0-255 são os bytes na ordem da tabela bytes_to_unicode, e a junção i
     * cria o ID 256 + i; <|endoftext|> é o 50256.
     */
    static fromGPT2VocabBPE(text) {
      // A tabela do GPT-2: bytes imprimíveis viram o próprio caractere; os outros, chr(256 + n).
      const printable = [];
      for (let b = 33; b <= 126; b++) printable.push(b);
      for (let b = 161; b <= 172; b++) printable.push(b);
      for (let b = 174; b <= 255; b++) printable.push(b);
      const order = printable.slice();
      for (let b = 0; b < 256; b++) if (!printable.includes(b)) order.push(b);
      const byteOfChar = new Map();
      let extra = 0;
      for (let b = 0; b < 256; b++) {
        const char = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
        byteOfChar.set(char, b);
      }
      const toBin = (token) => Array.from(token, (ch) => String.fromCharCode(byteOfChar.get(ch))).join("");
      const vocab = order.map((b) => String.fromCharCode(b)); // ID i -> o i-ésimo byte da tabela
      const lines = text.split("\n").slice(1); // a 1.ª linha é o cabeçalho "#version: 0.2"
      for (const line of lines) {
        if (!line) continue;
        const [first, second] = line.split(" ");
        vocab.push(toBin(first) + toBin(second));
      }
      return new BPETokenizer(vocab, GPT2_PATTERN, { "<|endoftext|>": vocab.length });
    }

    /** Um pedaço (string binária) -> IDs, com a regra "junte o par de menor ID primeiro". */
    bpe(piece) {
      const whole = this.ranks.get(piece);
      if (whole !== undefined) return [whole];
      let parts = Array.from(piece); // um byte por parte
      while (parts.length > 1) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i < parts.length - 1; i++) {
          const rank = this.ranks.get(parts[i] + parts[i + 1]);
          if (rank !== undefined && rank < bestRank) {
            best = i;
            bestRank = rank;
          }
        }
        if (best < 0) break;
        parts.splice(best, 2, parts[best] + parts[best + 1]);
      }
      return parts.map((part) => this.ranks.get(part));
    }

    /** Texto -> IDs. Os tokens especiais (<|endoftext|>) são reconhecidos, como allowed_special="all". */
    encode(text) {
      const ids = [];
      const segments = this.specialSplitter ? text.split(this.specialSplitter) : [text];
      segments.forEach((segment, i) => {
        if (i % 2 === 1) {
          ids.push(this.specialTokens[segment]); // o grupo capturado: um token especial
          return;
        }
        for (const match of segment.matchAll(this.splitter)) {
          const piece = match[0];
          let pieceIds = this.cache.get(piece);
          if (pieceIds === undefined) {
            pieceIds = this.bpe(toBinary(piece));
            if (this.cache.size < 100000) this.cache.set(piece, pieceIds);
          }
          ids.push(...pieceIds);
        }
      });
      return ids;
    }

    /** Os bytes de um token (string binária); para um especial, o seu texto em UTF-8. */
    tokenBinary(id) {
      if (id >= 0 && id < this.vocab.length) return this.vocab[id];
      const special = this.specialById.get(id);
      if (special !== undefined) return toBinary(special);
      throw new Error("o ID " + id + " não existe (vão de 0 a " + (this.vocabSize - 1) + ")");
    }

    /** IDs -> texto; bytes que não formam UTF-8 válido viram "�" (como errors="replace"). */
    decode(ids) {
      return new TextDecoder("utf-8", { ignoreBOM: true }).decode(binaryToBytes(ids.map((id) => this.tokenBinary(id)).join("")));
    }

    /** IDs -> texto, ou null se os bytes não formam UTF-8 válido (um caractere cortado ao meio). */
    decodeStrict(ids) {
      try {
        return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(binaryToBytes(ids.map((id) => this.tokenBinary(id)).join("")));
      } catch (error) {
        return null;
      }
    }

    /**
     * O texto de um token, como companion.tokenizers.token_pieces: um token que é só parte
     * de um caractere (o 1.º byte de "ç") aparece em hexadecimal, como <C3>.
     */
    piece(id) {
      const text = this.decodeStrict([id]);
      if (text !== null) return text;
      const hex = (ch) => "<" + ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0") + ">";
      return Array.from(this.tokenBinary(id), hex).join("");
    }

    /** Os tokens de um texto: [{id, piece}], na ordem do texto. */
    pieces(text) {
      return this.encode(text).map((id) => ({ id, piece: this.piece(id) }));
    }
  }

  LLMdoZero.BPETokenizer = BPETokenizer;
  if (typeof module !== "undefined" && module.exports) module.exports = { BPETokenizer };
})(typeof window !== "undefined" ? window : globalThis);
