// Web chat for the sample assistant: the REST channel for the conversation; the web chat channel's
// own routes (rasa_project/webchat_channel.py) for the debug panel (parse), the history kept in the
// tracker store and the status line. Nothing of Rasa's HTTP API, which can stay closed.
// Plain JavaScript, no build step, no CDN.
(function () {
  "use strict";

  const params = new URLSearchParams(window.location.search);
  const SERVER = (params.get("server") ||
    (window.location.protocol.startsWith("http") ? window.location.origin : "http://localhost:5005")
  ).replace(/\/+$/, "");
  const SENDER_KEY = "qinghe-webchat-sender";
  const CHANNEL = "/webhooks/webchat";

  const $ = (id) => document.getElementById(id);
  const messages = $("messages");
  const debugLog = $("debug-log");
  const input = $("input");
  const sendButton = $("send");

  let debugPanel = true;
  let sender = params.get("sender") || localStorage.getItem(SENDER_KEY) || newSenderId();
  localStorage.setItem(SENDER_KEY, sender);
  $("sender-id").textContent = sender;

  // The id is the conversation's key (whoever knows it can continue the conversation): 128 random bits.
  function newSenderId() {
    const bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function scrollDown() {
    messages.scrollTop = messages.scrollHeight;
  }

  async function http(method, path, body) {
    const response = await fetch(SERVER + path, {
      method: method,
      headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    if (!response.ok) {
      const error = new Error(method + " " + path + " → HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  // ------------------------------------------------------------------ chat

  function addMessage(role, text, options) {
    options = options || {};
    const item = el("li", "msg " + role + (options.restored ? " restored" : ""));
    item.setAttribute("data-testid", "msg-" + role);
    if (text) item.appendChild(el("div", "bubble", text));
    if (options.image) {
      const img = el("img");
      img.src = options.image;
      img.alt = "";
      item.appendChild(img);
    }
    if (options.buttons && options.buttons.length) {
      const row = el("div", "buttons");
      options.buttons.forEach((b) => {
        const button = el("button", "", b.title);
        button.type = "button";
        button.addEventListener("click", () => send(b.payload || b.title, b.title));
        row.appendChild(button);
      });
      item.appendChild(row);
    }
    if (options.intent) item.appendChild(intentTag(options.intent));
    messages.appendChild(item);
    scrollDown();
    return item;
  }

  function intentTag(intent) {
    const fallback = intent.name === "nlu_fallback";
    const tag = el("div", "intent-tag" + (fallback ? " fallback" : ""));
    tag.setAttribute("data-testid", "intent-tag");
    tag.textContent = "意图：" + intent.name +
      (typeof intent.confidence === "number" ? " · " + intent.confidence.toFixed(2) : "");
    return tag;
  }

  function addBotReplies(replies, restored) {
    if (!replies.length && !restored) {
      addMessage("system", "（小禾这次没有回复）");
    }
    replies.forEach((r) => addMessage("bot", r.text, { image: r.image, buttons: r.buttons, restored: restored }));
  }

  async function send(text, shown) {
    text = (text || "").trim();
    if (!text) return;
    const userItem = addMessage("user", shown || text);
    const typing = addMessage("bot typing", "小禾正在输入…");
    sendButton.disabled = true;
    const started = performance.now();

    const parsing = (debugPanel ? http("POST", CHANNEL + "/parse", { text: text }) : Promise.resolve(null))
      .then((parse) => {
        if (!parse) return;
        renderDebug(text, parse, performance.now() - started);
        if (parse.intent && parse.intent.name) userItem.appendChild(intentTag(parse.intent));
      })
      .catch((error) => renderDebugError(text, error));

    try {
      const replies = await http("POST", "/webhooks/rest/webhook", { sender: sender, message: text });
      typing.remove();
      addBotReplies(replies, false);
    } catch (error) {
      typing.remove();
      addMessage("system", "消息没有发出去：" + error.message + "。请确认 rasa run 正在运行。");
    } finally {
      sendButton.disabled = false;
      input.focus();
    }
    await parsing;
  }

  // ------------------------------------------------------------------ debug panel

  function pct(x) {
    return typeof x === "number" ? x.toFixed(3) : "-";
  }

  function describeValue(value) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(3);
    if (typeof value === "boolean") return value ? "是" : "否";
    if (typeof value === "string") return value;
    if (Array.isArray(value)) return value.map(describeValue).join("，");
    if (typeof value === "object" && "name" in value) {
      return value.name + ("confidence" in value ? " (" + pct(value.confidence) + ")" : "");
    }
    if (typeof value === "object" && "intent" in value && Object.keys(value).length <= 3) {
      const score = value.confidence !== undefined ? value.confidence : value.score;
      return value.intent + (score !== undefined ? " (" + pct(score) + ")" : "");
    }
    return JSON.stringify(value);
  }

  // The `few_shot` field of GPT2FewShotIntentClassifier's parse output.
  const FEW_SHOT_LABELS = {
    reason: "原因",
    previous: "BERT 的判断",
    answer: "GPT-2 的判断",
    margin: "前两名差距",
    candidates: "候选打分",
    cache_hit: "前缀 KV 缓存命中",
    time_ms: "耗时 (ms)",
  };
  const FEW_SHOT_REASONS = {
    confident: "BERT 足够确定（置信度和前两名差距都过了阈值），GPT-2 不必出手",
    low_confidence: "BERT 置信度低于 threshold",
    small_margin: "BERT 前两名差距小于 ambiguity_threshold",
    untrained: "组件没有训练",
    empty_text: "空消息",
    no_intent: "前面的分类器没有给出意图",
  };

  function renderFewShot(fewShot) {
    const box = el("div", "fewshot");
    box.setAttribute("data-testid", "debug-fewshot");
    if (!fewShot) {
      box.appendChild(el("div", "verdict", "few-shot：解析结果里没有 few_shot 字段（管线里没有 GPT2FewShotIntentClassifier）"));
      return box;
    }
    const acted = Boolean(fewShot.acted);
    if (acted) box.classList.add("acted");
    box.appendChild(el("div", "verdict",
      acted ? "GPT-2 few-shot 回退出手了" : "GPT-2 few-shot 回退未出手"));
    const list = el("dl");
    const keys = Object.keys(fewShot).filter((k) => k !== "acted");
    keys.sort((a, b) => (a === "reason" ? -1 : b === "reason" ? 1 : 0));
    keys.forEach((key) => {
      let shown = describeValue(fewShot[key]);
      if (key === "reason" && FEW_SHOT_REASONS[fewShot[key]]) shown = fewShot[key] + "：" + FEW_SHOT_REASONS[fewShot[key]];
      list.appendChild(el("dt", "", FEW_SHOT_LABELS[key] || key));
      const value = el("dd", "", shown);
      if (key === "reason") value.setAttribute("data-testid", "debug-fewshot-reason");
      list.appendChild(value);
    });
    if (keys.length) box.appendChild(list);
    return box;
  }

  function renderDebug(text, parse, ms) {
    const intent = parse.intent || {};
    const entry = el("li", "debug-entry" + (intent.name === "nlu_fallback" ? " fallback" : ""));
    entry.setAttribute("data-testid", "debug-entry");

    const head = el("div", "text", "“" + text + "”");
    head.appendChild(el("span", "meta", Math.round(ms) + " ms"));
    entry.appendChild(head);

    const line = el("div", "intent");
    line.appendChild(el("span", "", "意图 "));
    const name = el("b", "", intent.name || "（无）");
    name.setAttribute("data-testid", "debug-intent");
    line.appendChild(name);
    const confidence = el("span", "", "  置信度 " + pct(intent.confidence));
    confidence.setAttribute("data-testid", "debug-confidence");
    line.appendChild(confidence);
    entry.appendChild(line);

    if (intent.name === "nlu_fallback") {
      const why = el("div", "row");
      why.appendChild(el("span", "label", "回退"));
      why.appendChild(el("span", "", parse.few_shot && parse.few_shot.acted
        ? "few-shot 模型回答“不知道”或仍不确定 → nlu_fallback → utter_default"
        : "FallbackClassifier：置信度低于阈值或前两名太接近 → nlu_fallback → utter_default"));
      entry.appendChild(why);
    }

    const ranking = (parse.intent_ranking || []).slice(0, 5);
    if (ranking.length) {
      const row = el("div", "row");
      row.appendChild(el("span", "label", "意图排名（前 5）"));
      const list = el("ol", "ranking");
      ranking.forEach((r) => {
        const item = el("li");
        item.appendChild(el("span", "", r.name));
        const bar = el("span", "bar");
        const fill = el("span");
        fill.style.width = Math.max(0, Math.min(100, (r.confidence || 0) * 100)).toFixed(1) + "%";
        bar.appendChild(fill);
        item.appendChild(bar);
        item.appendChild(el("span", "num", pct(r.confidence)));
        list.appendChild(item);
      });
      row.appendChild(list);
      entry.appendChild(row);
    }

    const entities = parse.entities || [];
    const row = el("div", "row");
    row.appendChild(el("span", "label", "实体"));
    const chips = el("div", "chips");
    chips.setAttribute("data-testid", "debug-entities");
    if (!entities.length) chips.appendChild(el("span", "chip", "无"));
    entities.forEach((e) => {
      const label = e.entity + (e.role ? "#" + e.role : "") + (e.group ? "@" + e.group : "");
      const surface = text.slice(e.start, e.end);
      const shown = label + " = " + e.value + (e.value !== surface ? "（原文“" + surface + "”）" : "");
      const chip = el("span", "chip", shown);
      chip.setAttribute("data-testid", "debug-entity");
      // who found it, and how sure it is (BERT gives confidence_entity; the regexes give none)
      const who = (e.extractor || "").replace("EntityExtractor", "").replace("BertIntentClassifier", "BERT");
      const sure = typeof e.confidence_entity === "number" ? " " + pct(e.confidence_entity) : "";
      chip.appendChild(el("span", "chip-source", " · " + who + sure));
      chips.appendChild(chip);
    });
    row.appendChild(chips);
    entry.appendChild(row);

    const fewShotRow = el("div", "row");
    fewShotRow.appendChild(el("span", "label", "GPT-2 few-shot 回退"));
    fewShotRow.appendChild(renderFewShot(parse.few_shot));
    entry.appendChild(fewShotRow);

    debugLog.prepend(entry);
  }

  function renderDebugError(text, error) {
    const entry = el("li", "debug-entry");
    entry.setAttribute("data-testid", "debug-entry");
    entry.appendChild(el("div", "text", "“" + text + "”"));
    const hint = error.status === 404 ? "：调试面板已关闭（credentials.yml 里 debug_panel: false）" : "";
    entry.appendChild(el("div", "error", "解析失败 " + error.message + hint));
    debugLog.prepend(entry);
  }

  // ------------------------------------------------------------------ server status and history

  async function checkStatus() {
    const status = document.querySelector("[data-testid=server-status]");
    const textNode = status.querySelector(".status-text");
    try {
      const info = await http("GET", CHANNEL + "/status");
      debugPanel = Boolean(info.debug_panel);
      document.body.classList.toggle("no-debug", !debugPanel);
      status.className = info.model_loaded ? "status ok" : "status bad";
      textNode.textContent = info.model_loaded ? "在线 · 模型 " + (info.model || "已加载") : "已连接，模型还没有加载";
    } catch (error) {
      status.className = "status bad";
      textNode.textContent = "连不上 " + SERVER;
    }
  }

  async function loadHistory() {
    let history;
    try {
      history = await http("GET", CHANNEL + "/history?sender=" + encodeURIComponent(sender));
    } catch (error) {
      return; // nothing yet, or the server is not up
    }
    let count = 0;
    (history.messages || []).forEach((message) => {
      if (message.role === "user") {
        addMessage("user", message.text, { restored: true, intent: message.intent || null });
      } else {
        addMessage("bot", message.text, { restored: true, image: message.image, buttons: message.buttons });
      }
      count += 1;
    });
    if (count) {
      addMessage("system", "以上 " + count + " 条是从 tracker store 恢复的历史消息（服务重启后依然在）。");
    }
  }

  // ------------------------------------------------------------------ wiring

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    input.value = "";
    send(text);
  });

  $("suggestions").addEventListener("click", (event) => {
    const text = event.target && event.target.dataset ? event.target.dataset.text : null;
    if (text) send(text);
  });

  $("new-session").addEventListener("click", () => {
    sender = newSenderId();
    localStorage.setItem(SENDER_KEY, sender);
    $("sender-id").textContent = sender;
    messages.replaceChildren();
    debugLog.replaceChildren();
    addMessage("system", "已开始新会话。");
    input.focus();
  });

  checkStatus().then(loadHistory).then(() => {
    if (!messages.children.length) {
      addMessage("bot", "您好，我是青禾生活馆的智能客服小禾。可以帮您查订单、查物流、办退货、领优惠券，或者问商品和客服时间。");
    }
  });
  input.focus();
})();
