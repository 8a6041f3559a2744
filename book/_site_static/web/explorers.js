// LLM do Zero — os três exploradores do livro, sem Python: tokenizadores (cap. 2), atenção
// (cap. 3) e decodificação (cap. 5).
//
// No Jupyter e no Colab, os capítulos usam as versões em ipywidgets (companion.book.widgets),
// que precisam de um kernel. No site não há kernel: estas versões fazem as mesmas contas em
// JavaScript, com os dados exportados junto com a página (companion.book.web):
//   - tokenizadores: o BPE do curso e o do GPT-2 rodam aqui mesmo (bpe.js);
//   - atenção: os pesos de cada cabeça vêm prontos; escolher cabeça e token só redesenha;
//   - decodificação: os logits do próximo token vêm prontos; temperatura, top-k e top-p
//     são aplicados aqui (sampler.js), do mesmo jeito que no Python.
//
// Cada explorador é um <div class="llmz-explorer" data-explorer="tokenizer|attention|decoding">
// com a sua configuração num <script type="application/json"> dentro dele. O conteúdo inicial
// do <div> (feito pelo Python) fica até este arquivo substituí-lo: sem JavaScript, ainda se lê
// o exemplo inicial.
(function (root) {
  "use strict";

  const LLMdoZero = (root.LLMdoZero = root.LLMdoZero || {});
  // Os arquivos do site ficam em _static/: este script está em _static/web/.
  const STATIC = new URL("..", document.currentScript.src).href;

  if (!document.querySelector('link[data-llmz-css]')) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = STATIC + "web/llmz.css";
    link.dataset.llmzCss = "1";
    document.head.appendChild(link);
  }

  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const visible = (piece) => piece.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "→");
  const pt = (x, digits) => x.toFixed(digits).replace(".", ",");
  const COLORS = ["#CFE8FC", "#FDE2B8", "#C9F0DF", "#F9D0C4", "#EED5E6", "#FFF6B3"]; // as de widgets.py

  const downloads = new Map();
  /** Baixa (uma vez só) um arquivo de _static/, como texto. */
  function fetchText(src) {
    if (!downloads.has(src)) {
      downloads.set(src, fetch(STATIC + src).then((response) => {
        if (!response.ok) throw new Error("não consegui baixar " + src + " (HTTP " + response.status + ")");
        return response.text();
      }));
    }
    return downloads.get(src);
  }

  // ------------------------------------------------------------------ cap. 2: tokenizadores
  /** Um tokenizador da configuração: {kind: "course"|"gpt2", data?: tokenizer.json, src?: arquivo}. */
  async function loadTokenizer(spec) {
    const BPE = LLMdoZero.BPETokenizer;
    if (spec.kind === "course") {
      const data = spec.data || JSON.parse(await fetchText(spec.src));
      return BPE.fromCourseJSON(data);
    }
    if (spec.kind === "gpt2") return BPE.fromGPT2VocabBPE(await fetchText(spec.src));
    throw new Error("tipo de tokenizador desconhecido: " + spec.kind);
  }

  function tokensRow(name, tokenizer, text) {
    if (!tokenizer) return `<div class="llmz-row"><b>${esc(name)}</b> <span class="llmz-note">(carregando...)</span></div>`;
    const pieces = tokenizer.pieces(text);
    const chips = pieces.map((t, i) =>
      `<span class="llmz-chip" style="background:${COLORS[i % COLORS.length]}"><span class="llmz-piece">${esc(visible(t.piece))}</span><br><span class="llmz-id">${t.id}</span></span>`);
    const words = text.split(/\s+/).filter(Boolean).length;
    const ratio = words ? ` · ${pt(pieces.length / words, 2)} tokens por palavra` : "";
    return `<div class="llmz-row" data-count="${pieces.length}" style="margin:6px 0"><b>${esc(name)}</b> ` +
      `<span class="llmz-note">(${pieces.length} tokens${ratio})</span><br>${chips.join("")}</div>`;
  }

  function mountTokenizer(box, config) {
    box.innerHTML = `<label class="llmz-control llmz-wide">Frase: <input type="text" name="text"></label><div class="llmz-rows"></div>`;
    const input = box.querySelector('input[name="text"]');
    const rows = box.querySelector(".llmz-rows");
    input.value = config.text;
    const tokenizers = config.tokenizers.map(() => null);
    const render = () => {
      rows.innerHTML = config.tokenizers.map((spec, i) => tokensRow(spec.name, tokenizers[i], input.value)).join("");
    };
    input.addEventListener("input", render);
    render();
    config.tokenizers.forEach((spec, i) => {
      loadTokenizer(spec).then((tokenizer) => {
        tokenizers[i] = tokenizer;
        render();
      }).catch((error) => {
        rows.insertAdjacentHTML("beforeend", `<p class="llmz-note">${esc(spec.name)}: ${esc(error.message)}</p>`);
      });
    });
  }

  // ------------------------------------------------------------------ cap. 3: atenção
  function attentionPanel(w, tokens, selected) {
    // w: (T, T) de uma cabeça; como companion.book.widgets.attention_html
    const cell = (value, scale) => {
      const alpha = scale <= 0 ? 0 : Math.min(1, value / scale);
      return `background: rgba(0, 114, 178, ${alpha.toFixed(2)}); color: ${alpha > 0.6 ? "white" : "#222"};`;
    };
    const row = w[selected];
    const rowMax = Math.max(...row);
    const words = tokens.map((tok, j) => {
      const border = j === selected ? "2px solid #D55E00" : "1px solid #ccc";
      return `<span class="llmz-att-word" data-token="${j}" title="${esc(tokens[selected])} → ${esc(tok)}: ${pt(row[j], 2)}" ` +
        `style="${cell(row[j], rowMax)} border: ${border}">${esc(tok)}<br><small>${pt(row[j], 2)}</small></span>`;
    });
    const header = tokens.map((t) => `<th>${esc(t)}</th>`).join("");
    const body = tokens.map((tok, i) => {
      const outline = i === selected ? "outline: 2px solid #D55E00;" : "";
      const cells = tokens.map((t, j) => `<td title="${esc(tok)} → ${esc(t)}: ${pt(w[i][j], 2)}" style="${cell(w[i][j], 1)}">${pt(w[i][j], 2)}</td>`);
      return `<tr style="${outline}"><th style="text-align:right">${esc(tok)}</th>${cells.join("")}</tr>`;
    });
    return `<p style="margin:4px 0">Para onde <b>${esc(tokens[selected])}</b> (posição ${selected}) olha ` +
      `<span class="llmz-note">(clique numa palavra para trocar)</span>:</p>` +
      `<div style="line-height:2.2em">${words.join("")}</div>` +
      `<table class="llmz-att-table"><tr><th></th>${header}</tr>${body.join("")}</table>` +
      `<p class="llmz-note">Linhas: o token que consulta; colunas: para quem ele olha. Cada linha soma 1.</p>`;
  }

  function mountAttention(box, config) {
    const options = config.heads.map((label, h) => `<option value="${h}">${esc(label)}</option>`).join("");
    box.innerHTML = `<label class="llmz-control">Cabeça: <select name="head">${options}</select></label><div class="llmz-panel"></div>`;
    const select = box.querySelector('select[name="head"]');
    const panel = box.querySelector(".llmz-panel");
    let head = config.head;
    let token = config.token;
    select.value = String(head);
    const render = () => {
      panel.innerHTML = attentionPanel(config.weights[head], config.tokens, token);
      box.dataset.head = head;
      box.dataset.token = token;
    };
    select.addEventListener("change", () => {
      head = Number(select.value);
      render();
    });
    panel.addEventListener("click", (event) => {
      const word = event.target.closest("[data-token]");
      if (!word) return;
      token = Number(word.dataset.token);
      render();
    });
    render();
  }

  // ------------------------------------------------------------------ cap. 5: decodificação
  function mountDecoding(box, config) {
    const S = LLMdoZero.sampling;
    const prompts = config.prompts.map((p, i) => `<option value="${i}">${esc(p.prompt)}</option>`).join("");
    box.innerHTML = `
      <div class="llmz-controls">
        <label class="llmz-control">Começo: <select name="prompt">${prompts}</select></label>
        <label class="llmz-control">temperatura <output data-for="temperature"></output>
          <input type="range" name="temperature" min="0" max="2" step="0.05" value="${config.temperature}"></label>
        <label class="llmz-control">top-k <output data-for="topK"></output>
          <input type="range" name="topK" min="0" max="50" step="1" value="${config.topK || 0}"><small>0 = desligado</small></label>
        <label class="llmz-control">top-p <output data-for="topP"></output>
          <input type="range" name="topP" min="0.05" max="1" step="0.05" value="${config.topP ?? 1}"><small>1 = desligado</small></label>
      </div>
      <div class="llmz-panel"></div>`;
    const input = (name) => box.querySelector(`[name="${name}"]`);
    const panel = box.querySelector(".llmz-panel");

    const render = () => {
      const entry = config.prompts[Number(input("prompt").value)];
      const temperature = Number(input("temperature").value);
      const topK = Number(input("topK").value) || null;
      const topP = Number(input("topP").value) < 1 ? Number(input("topP").value) : null;
      box.querySelector('output[data-for="temperature"]').textContent = pt(temperature, 2);
      box.querySelector('output[data-for="topK"]').textContent = topK === null ? "desligado" : topK;
      box.querySelector('output[data-for="topP"]').textContent = topP === null ? "desligado" : pt(topP, 2);
      const logits = Float64Array.from(entry.logits);
      // Antes dos filtros: só a temperatura (na gulosa, mostramos o modelo puro, T = 1).
      const before = S.softmax(temperature > 0 ? logits.map((x) => x / temperature) : logits);
      const after = temperature > 0 ? S.nextTokenProbs(logits, { temperature, topK, topP }) : null;
      const greedy = S.argmax(logits);
      const shown = S.topCandidates(before, 12);
      const bars = shown.map((c) => {
        const p = after ? after[c.id] : c.id === greedy ? 1 : 0;
        const cut = p === 0 ? " llmz-cut" : "";
        const piece = entry.pieces[c.id] ?? "#" + c.id;
        return `<div class="llmz-bar${cut}" data-id="${c.id}" data-p="${p.toFixed(6)}"><code>${esc(visible(piece))}</code>` +
          `<span class="llmz-track"><span class="llmz-ghost" style="width:${(c.p * 100).toFixed(1)}%"></span>` +
          `<span class="llmz-fill" style="width:${(p * 100).toFixed(1)}%"></span></span><span>${pt(p * 100, 1)}%</span></div>`;
      });
      const kept = after ? after.reduce((n, p) => n + (p > 0 ? 1 : 0), 0) : 1;
      // 20 sorteios com a semente 0: a variedade que estes filtros deixam.
      const random = S.mulberry32(0);
      const draws = Array.from({ length: 20 }, () => (after ? S.drawFrom(after, random()) : greedy));
      const drawn = draws.map((id) => `<code>${esc(visible(entry.pieces[id] ?? "#" + id))}</code>`).join(" ");
      panel.innerHTML = `<p>Depois de <b>${esc(entry.prompt)}</b>, os 12 candidatos mais prováveis ` +
        `(tracejado: a probabilidade só com a temperatura; azul: depois do top-k e do top-p, de onde se sorteia):</p>` +
        bars.join("") +
        `<p class="llmz-note" data-kept="${kept}">${kept} de ${logits.length} tokens podem ser sorteados.` +
        `${temperature === 0 ? " Temperatura 0: a escolha gulosa, sempre o mais provável." : ""}</p>` +
        `<p class="llmz-note">20 sorteios (semente 0): ${drawn}</p>`;
      box.dataset.kept = kept;
    };
    for (const name of ["prompt", "temperature", "topK", "topP"]) input(name).addEventListener("input", render);
    render();
  }

  // ------------------------------------------------------------------ montagem
  const MOUNT = { tokenizer: mountTokenizer, attention: mountAttention, decoding: mountDecoding };

  function mountAll() {
    document.querySelectorAll(".llmz-explorer:not([data-mounted])").forEach((box) => {
      const mount = MOUNT[box.dataset.explorer];
      const script = box.querySelector('script[type="application/json"]');
      if (!mount || !script) return;
      box.dataset.mounted = "1";
      const config = JSON.parse(script.textContent);
      box.classList.add("llmz-box");
      try {
        mount(box, config);
      } catch (error) {
        box.insertAdjacentHTML("beforeend", `<p class="llmz-note">Erro no explorador: ${esc(error.message)}</p>`);
      }
    });
  }

  LLMdoZero.mountExplorers = mountAll;
  mountAll();
})(window);
