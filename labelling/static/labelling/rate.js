/* The labelling page: leases items over the REST API, renders them safely, takes answers.
 *
 * Every piece of item or schema text is untrusted: the DOM is built with createElement and
 * textContent only, never innerHTML. Markdown is rendered by a small parser that keeps, on the
 * element around each rendered text node, the code-point offset of that text in the raw content
 * (data-start), so a selection maps back to exact offsets for span answers.
 */
(function () {
  "use strict";


  const config = JSON.parse(document.getElementById("rate-config").textContent);
  const guidelines = JSON.parse(document.getElementById("rate-guidelines").textContent);
  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat(document.documentElement.lang || undefined);
  const fmtNumber = (n) => numberFormat.format(n);

  const HEARTBEAT_MS = 60 * 1000;
  const SKIP_WINDOW_MS = 1500;
  const STORAGE_PREFIX = "annotator.assignment.";
  const STORAGE_MAX_AGE_MS = 14 * 24 * 3600 * 1000;
  const LANG_RE = /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/;

  // DOM helpers and the Markdown renderer live in conversation.js, shared with the review page.
  const { gettext, ngettext, interpolate, el, kbd, Markdown, isTyping, optionKeys } =
    window.annotatorConversation;

  // ---------------------------------------------------------------------------------------
  // Small services: storage, ids, requests, status line.

  const storage = {
    get(key) {
      try {
        const raw = window.localStorage.getItem(key);
        return raw ? JSON.parse(raw) : null;
      } catch (_) {
        return null;
      }
    },
    set(key, value) {
      try {
        window.localStorage.setItem(key, JSON.stringify(value));
      } catch (_) {
        /* storage full or disabled: answers live in memory only */
      }
    },
    remove(key) {
      try {
        window.localStorage.removeItem(key);
      } catch (_) {
        /* ignore */
      }
    },
    prune() {
      try {
        const now = Date.now();
        for (let i = window.localStorage.length - 1; i >= 0; i--) {
          const key = window.localStorage.key(i);
          if (!key || !key.startsWith(STORAGE_PREFIX)) continue;
          const value = storage.get(key);
          if (!value || !value.savedAt || now - value.savedAt > STORAGE_MAX_AGE_MS) storage.remove(key);
        }
      } catch (_) {
        /* ignore */
      }
    },
  };

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues does not.
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  async function post(url, body) {
    const headers = { "X-CSRFToken": config.csrf_token, Accept: "application/json" };
    const init = { method: "POST", credentials: "same-origin", headers: headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    if (response.status !== 204) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    return { status: response.status, data: data };
  }

  const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));
  const backoff = (attempt) => Math.min(30000, 1000 * 2 ** Math.min(attempt, 5));

  const status = window.annotatorConversation.statusLine(4000);

  // ---------------------------------------------------------------------------------------
  // Page state.

  let state = null; // the current item, its questions and answers
  let raw = false; // show raw text instead of rendered markdown
  let skipArmedAt = 0;
  let lastHeartbeat = 0;
  let visibleSince = document.visibilityState === "visible" ? performance.now() : null;

  const stage = $("stage");

  function roleLabel(role) {
    return (
      {
        user: gettext("User"),
        assistant: gettext("Assistant"),
        system: gettext("System"),
        tool: gettext("Tool"),
      }[role] || role
    );
  }

  function elapsedMs() {
    if (!state) return 0;
    const running = visibleSince === null ? 0 : performance.now() - visibleSince;
    return Math.max(0, Math.round(state.timeMs + running));
  }

  function persist() {
    if (!state || state.done) return;
    storage.set(STORAGE_PREFIX + state.assignmentId, {
      answers: state.answers,
      idempotencyKey: state.idempotencyKey,
      timeMs: elapsedMs(),
      savedAt: Date.now(),
    });
  }

  function updateProgress(progress) {
    if (!progress) return;
    $("progress-text").textContent = interpolate(
      ngettext(
        "%(today)s done today · %(complete)s / %(items)s complete",
        "%(today)s done today · %(complete)s / %(items)s complete",
        progress.mine_today
      ),
      {
        today: fmtNumber(progress.mine_today),
        complete: fmtNumber(progress.complete),
        items: fmtNumber(progress.items),
      },
      true
    );
    const bar = $("progress-bar");
    bar.max = Math.max(1, progress.items);
    bar.value = progress.complete;
  }

  // ---------------------------------------------------------------------------------------
  // Questions: visibility, values, payload.

  function answerOf(q, turn) {
    const value = state.answers[q.key];
    if (q.scope === "assistant_turn") return value && typeof value === "object" ? value[turn] : undefined;
    return value;
  }

  function setAnswer(q, turn, value) {
    if (q.scope === "assistant_turn") {
      const per = state.answers[q.key] && typeof state.answers[q.key] === "object" ? state.answers[q.key] : {};
      if (value === undefined) delete per[turn];
      else per[turn] = value;
      state.answers[q.key] = per;
    } else if (value === undefined) {
      delete state.answers[q.key];
    } else {
      state.answers[q.key] = value;
    }
  }

  function shown(q, turn) {
    const cond = q.show_if;
    if (!cond) return true;
    const ref = state.byKey[cond.question];
    if (!ref) return false;
    const refTurn = ref.scope === "assistant_turn" ? turn : null;
    if (ref.scope === "assistant_turn" && turn === null) return false;
    if (!shown(ref, refTurn)) return false;
    const given = answerOf(ref, refTurn);
    if (given === undefined || given === null) return false;
    if (ref.type === "multi_choice") return Array.isArray(given) && given.includes(cond.equals);
    return given === cond.equals;
  }

  function cleanValue(q, value) {
    if (value === undefined || value === null) return undefined;
    switch (q.type) {
      case "text": {
        const text = String(value).trim();
        return text ? text : undefined;
      }
      case "multi_choice": {
        const chosen = (q.options || []).map((o) => o.value).filter((v) => value.includes(v));
        return chosen.length ? chosen : undefined;
      }
      case "span":
        return value.length
          ? value.map((s) => ({ message: s.message, start: s.start, end: s.end, label: s.label, text: s.text }))
          : undefined;
      case "preference": {
        if (!value.choice) return undefined;
        const out = { choice: value.choice };
        if (value.choice !== "tie" && q.strength > 0 && value.strength) out.strength = value.strength;
        return out;
      }
      default:
        return value;
    }
  }

  function buildAnswers() {
    const out = {};
    for (const q of state.questions) {
      if (q.scope === "assistant_turn") {
        const per = {};
        for (const turn of state.assistantTurns) {
          if (!shown(q, turn)) continue;
          const v = cleanValue(q, answerOf(q, turn));
          if (v !== undefined) per[turn] = v;
        }
        if (Object.keys(per).length) out[q.key] = per;
      } else {
        if (q.type === "preference" && !state.item.candidates) continue;
        if (!shown(q, null)) continue;
        const v = cleanValue(q, answerOf(q, null));
        if (v !== undefined) out[q.key] = v;
      }
    }
    return out;
  }

  function missing(slot) {
    const q = slot.q;
    const value = cleanValue(q, answerOf(q, slot.turn));
    if (q.type === "preference" && value && value.choice !== "tie" && q.strength > 0 && !value.strength) {
      return gettext("Choose how much better it is.");
    }
    if (q.required && value === undefined) return gettext("This question is required.");
    return null;
  }

  // ---------------------------------------------------------------------------------------
  // Rendering an item.

  function renderContent(info) {
    const box = info.el;
    box.replaceChildren();
    info.cp = raw ? Markdown.renderPlain(info.raw, box) : Markdown.render(info.raw, box);
    info.inverse = Markdown.inverseMap(info.cp, info.raw.length);
    highlight(info);
  }

  function spansOn(messageId) {
    const found = [];
    for (const q of state.questions) {
      if (q.type !== "span") continue;
      const labels = q.labels.map((l) => l.value);
      for (const s of state.answers[q.key] || []) {
        if (s.message === messageId) {
          const index = labels.indexOf(s.label);
          found.push({ span: s, q: q, label: q.labels[index] ? q.labels[index].label : s.label, index: index });
        }
      }
    }
    return found;
  }

  // Wrap the parts of each text segment covered by spans in <mark>, splitting the segment so
  // every text node's parent still carries its own data-start.
  function highlight(info) {
    const spans = spansOn(info.id).map((h) => ({
      a: info.inverse[Math.min(h.span.start, info.inverse.length - 1)],
      b: info.inverse[Math.min(h.span.end, info.inverse.length - 1)],
      h: h,
    }));
    if (!spans.length) return;
    for (const seg of Array.from(info.el.querySelectorAll(".seg"))) {
      const a = Number(seg.dataset.u);
      const b = a + seg.textContent.length;
      const hits = spans.filter((s) => s.a < b && s.b > a);
      if (!hits.length) continue;
      const cuts = new Set([a, b]);
      for (const s of hits) {
        if (s.a > a) cuts.add(s.a);
        if (s.b < b) cuts.add(s.b);
      }
      const points = Array.from(cuts).sort((x, y) => x - y);
      const fragment = document.createDocumentFragment();
      for (let k = 0; k + 1 < points.length; k++) {
        const x = points[k];
        const y = points[k + 1];
        const piece = el("span", {
          class: "seg",
          "data-start": info.cp[x],
          "data-u": x,
          text: info.raw.slice(x, y),
        });
        const cover = hits.filter((s) => s.a <= x && s.b >= y);
        if (!cover.length) {
          fragment.append(piece);
          continue;
        }
        const first = cover[0].h;
        const mark = el("mark", {
          class: "hl hl-" + (Math.max(0, first.index) % 6) + (cover.length > 1 ? " hl-multi" : ""),
          title: cover.map((s) => s.h.label).join(", "),
        }, [piece]);
        fragment.append(mark);
      }
      seg.replaceWith(fragment);
    }
  }

  function messageBox(message, extraClass, heading) {
    const lang = state.item.language && LANG_RE.test(state.item.language) ? state.item.language : null;
    const content = el("div", { class: "content md", dir: "auto", lang: lang, "data-message": message.id });
    const head = el("div", { class: "role" }, [heading || roleLabel(message.role)]);
    if (message.name) head.append(el("span", { class: "muted", text: " · " + String(message.name) }));
    const article = el("article", {
      class: "msg msg-" + message.role + (extraClass ? " " + extraClass : ""),
      "data-message": message.id,
      "data-role": message.role,
    }, [head, content]);
    if (message.tool_calls) {
      const calls = el("pre", { class: "tool-calls", dir: "ltr" });
      calls.textContent = JSON.stringify(message.tool_calls, null, 2);
      article.append(el("div", { class: "muted small", text: gettext("Tool calls") }), calls);
    }
    if (message.tool_call_id) {
      article.append(el("div", { class: "muted small", text: interpolate(gettext("Answers tool call %s"), [String(message.tool_call_id)]) }));
    }
    const info = {
      id: message.id,
      role: message.role,
      raw: typeof message.content === "string" ? message.content : JSON.stringify(message.content),
      el: content,
    };
    state.messageInfo[message.id] = info;
    renderContent(info);
    return article;
  }

  function questionHead(q, slot) {
    const title = el("span", { class: "q-title", text: q.title });
    const head = el("div", { class: "q-head" }, [title]);
    if (q.required) title.append(el("span", { class: "req", title: gettext("Required"), "aria-label": gettext("Required"), text: "\u00a0*" }));
    if (slot.turn && q.scope === "assistant_turn" && state.assistantTurns.length > 1) {
      head.append(el("span", { class: "muted turn-ref", text: interpolate(gettext("reply %s"), [String(state.assistantTurns.indexOf(slot.turn) + 1)]) }));
    }
    const hint = suggestionText(q, slot);
    if (hint) head.append(el("span", { class: "muted small suggestion", text: hint }));
    return head;
  }

  // The model's guess, shown beside the title only when the project sends suggestions; it is
  // never chosen for the rater, who still picks every answer.
  function suggestionText(q, slot) {
    const all = state.lease.suggestions;
    const guess = !slot.turn && all && all[q.key];
    if (!guess || guess.value === undefined || guess.value === null) return "";
    if (Array.isArray(guess.value)) {
      // A multi-choice guess: the options the model would choose; nothing shown for none.
      if (!guess.value.length) return "";
      const names = guess.value.map((value) => {
        const option = (q.options || []).find((o) => String(o.value) === String(value));
        return option ? option.label || String(option.value) : String(value);
      });
      return interpolate(gettext("Model suggests: %s"), [names.join(", ")]);
    }
    const option = (q.options || []).find((o) => String(o.value) === String(guess.value));
    const label = option ? option.label || String(option.value) : String(guess.value);
    const p = guess.probabilities && guess.probabilities[String(guess.value)];
    if (typeof p !== "number") return interpolate(gettext("Model suggests: %s"), [label]);
    return interpolate(gettext("Model suggests: %(label)s (%(percent)s%)"), { label: label, percent: Math.round(p * 100) }, true);
  }


  function makeSlot(q, turn) {
    const slot = { q: q, turn: turn, keys: {} };
    const section = el("section", {
      class: "q q-" + q.type + (q.required ? " required" : ""),
      "data-q": q.key,
      "data-turn": turn,
      role: "group",
      "aria-label": q.title,
    });
    slot.el = section;
    const head = questionHead(q, slot);
    section.append(head);
    if (q.help) {
      // A tooltip on hover; a click (or focus and Enter) opens the text below the title.
      const text = el("div", { class: "q-help-text", dir: "auto", hidden: true, text: q.help });
      text.id = "help-" + q.key + (turn ? "-" + state.slots.length : "");
      const toggle = el("button", { type: "button", class: "help-toggle", title: q.help, "aria-label": gettext("Help"), "aria-expanded": "false", "aria-controls": text.id, text: "i" });
      toggle.addEventListener("click", () => {
        text.hidden = !text.hidden;
        toggle.setAttribute("aria-expanded", text.hidden ? "false" : "true");
      });
      head.append(toggle);
      section.append(text);
    }
    const body = el("div", { class: "q-body" });
    section.append(body);
    slot.error = el("p", { class: "q-error", role: "alert", hidden: true });
    section.append(slot.error);
    section.addEventListener("mousedown", () => activate(state.slots.indexOf(slot), false));
    section.addEventListener("focusin", () => activate(state.slots.indexOf(slot), false));
    ({ choice: buildChoice, multi_choice: buildChoice, rating: buildRating, text: buildText, span: buildSpan, preference: buildPreference })[q.type](slot, body);
    return slot;
  }

  function optionButton(label, key, help, extraClass) {
    const button = el("button", { type: "button", class: "opt" + (extraClass ? " " + extraClass : ""), "aria-pressed": "false", title: help || null });
    if (key) button.append(kbd(key));
    button.append(el("span", { class: "opt-label", text: label }));
    return button;
  }

  function buildChoice(slot, body) {
    const q = slot.q;
    const keys = optionKeys(q.options);
    const wrap = el("div", { class: "opts", role: q.type === "choice" ? "radiogroup" : "group" });
    slot.buttons = q.options.map((option, index) => {
      const button = optionButton(option.label, keys[index], option.help, q.type === "multi_choice" ? "check" : "radio");
      button.dataset.value = option.value;
      button.addEventListener("click", () => choose(slot, option.value, false));
      if (keys[index]) slot.keys[keys[index].toLowerCase()] = option.value;
      wrap.append(button);
      return button;
    });
    body.append(wrap);
    slot.sync = () => {
      const value = answerOf(q, slot.turn);
      for (const button of slot.buttons) {
        const on = q.type === "choice" ? value === button.dataset.value : Array.isArray(value) && value.includes(button.dataset.value);
        button.setAttribute("aria-pressed", on ? "true" : "false");
      }
    };
    slot.answered = () => cleanValue(q, answerOf(q, slot.turn)) !== undefined;
  }

  function buildRating(slot, body) {
    const q = slot.q;
    const wrap = el("div", { class: "scale scale-" + q.scale, role: "radiogroup" });
    const anchors = q.anchors || {};
    slot.buttons = [];
    for (let point = 1; point <= q.scale; point++) {
      const key = point === 10 ? "0" : String(point);
      const button = el("button", { type: "button", class: "pt", "aria-pressed": "false", "data-value": point }, [
        el("span", { class: "pt-num", text: String(point) }),
      ]);
      if (point === 10) button.append(kbd("0"));
      if (anchors[String(point)]) button.append(el("span", { class: "pt-anchor", text: anchors[String(point)] }));
      button.addEventListener("click", () => choose(slot, point, false));
      slot.keys[key] = point;
      slot.buttons.push(button);
      wrap.append(button);
    }
    body.append(wrap);
    slot.sync = () => {
      const value = answerOf(q, slot.turn);
      slot.buttons.forEach((b, i) => b.setAttribute("aria-pressed", value === i + 1 ? "true" : "false"));
    };
    slot.answered = () => answerOf(q, slot.turn) !== undefined;
  }

  function buildText(slot, body) {
    const q = slot.q;
    const field = q.multiline === false ? el("input", { type: "text" }) : el("textarea", { rows: "3" });
    field.className = "text-answer";
    field.setAttribute("dir", "auto");
    if (q.max_length) field.maxLength = q.max_length;
    if (q.placeholder) field.placeholder = q.placeholder;
    field.setAttribute("aria-label", q.title);
    const counter = el("span", { class: "muted counter" });
    const hint = el("span", { class: "muted hint" }, q.multiline === false ? [kbd("Enter"), " ", gettext("submits")] : [kbd("Ctrl"), "+", kbd("Enter"), " ", gettext("submits"), " · ", kbd("Esc"), " ", gettext("leaves the box")]);
    field.addEventListener("input", () => {
      if (state.saving) return;
      setAnswer(q, slot.turn, field.value === "" ? undefined : field.value);
      changed(slot, false);
      counter.textContent = q.max_length ? fmtNumber(field.value.length) + " / " + fmtNumber(q.max_length) : "";
    });
    body.append(field, el("div", { class: "text-foot" }, [hint, counter]));
    slot.field = field;
    slot.sync = () => {
      const value = answerOf(q, slot.turn) || "";
      if (field.value !== value) field.value = value;
      counter.textContent = q.max_length ? fmtNumber(field.value.length) + " / " + fmtNumber(q.max_length) : "";
      field.readOnly = Boolean(state.saving);
    };
    slot.answered = () => cleanValue(q, answerOf(q, slot.turn)) !== undefined;
  }

  function buildSpan(slot, body) {
    const q = slot.q;
    const wrap = el("div", { class: "opts labels" });
    slot.labelKeys = {};
    slot.buttons = q.labels.map((label, index) => {
      const button = optionButton(label.label, label.hotkey, label.help, "lab hl-" + (index % 6));
      button.removeAttribute("aria-pressed");
      // Keep the text selection when the label is clicked.
      button.addEventListener("mousedown", (ev) => ev.preventDefault());
      button.addEventListener("click", () => addSpanFromSelection(slot, label.value));
      if (label.hotkey) slot.labelKeys[label.hotkey.toLowerCase()] = label.value;
      wrap.append(button);
      return button;
    });
    const roles = q.roles.map(roleLabel).join(", ");
    const hint = el("p", { class: "muted hint", text: interpolate(gettext("Select text in a message (%s), then press a label's key or click the label."), [roles]) });
    const list = el("ul", { class: "spans" });
    body.append(wrap, hint, list);
    slot.sync = () => {
      list.replaceChildren();
      const spans = state.answers[q.key] || [];
      spans.forEach((span, i) => {
        const index = q.labels.findIndex((l) => l.value === span.label);
        const label = index >= 0 ? q.labels[index].label : span.label;
        const remove = el("button", { type: "button", class: "x", title: gettext("Remove"), "aria-label": gettext("Remove"), text: "×" });
        remove.addEventListener("click", () => removeSpan(slot, i));
        const where = state.messageInfo[span.message];
        list.append(el("li", { "data-start": span.start, "data-end": span.end, "data-message": span.message }, [
          el("span", { class: "tag hl-" + (Math.max(index, 0) % 6), text: label }),
          el("q", { class: "span-text", dir: "auto", text: span.text.length > 80 ? span.text.slice(0, 80) + "…" : span.text }),
          el("span", { class: "muted", text: where ? roleLabel(where.role) : span.message }),
          remove,
        ]));
      });
      if (!spans.length) list.append(el("li", { class: "muted none", text: gettext("No text marked.") }));
    };
    slot.answered = () => (state.answers[q.key] || []).length > 0;
  }

  function buildPreference(slot, body) {
    const q = slot.q;
    const choices = [["A", "a", gettext("Reply A")]];
    if (q.allow_tie) choices.push(["tie", "=", gettext("Tie")]);
    choices.push(["B", "b", gettext("Reply B")]);
    const row = el("div", { class: "opts pref" });
    slot.buttons = choices.map(([value, key, label]) => {
      const button = optionButton(label, key, null, "radio");
      button.dataset.value = value;
      button.addEventListener("click", () => choosePreference(slot, value, false));
      row.append(button);
      return button;
    });
    slot.keys = { a: "A", b: "B" };
    if (q.allow_tie) {
      slot.keys["="] = "tie";
      slot.keys.t = "tie";
    }
    const strengthRow = el("div", { class: "opts strength", hidden: true });
    slot.strengthButtons = (q.strength_labels || []).map((label, index) => {
      const button = optionButton(label, String(index + 1), null, "radio");
      button.addEventListener("click", () => chooseStrength(slot, index + 1, false));
      strengthRow.append(button);
      return button;
    });
    const strengthTitle = el("div", { class: "muted small", text: gettext("How much better?") });
    const strengthBox = el("div", { class: "strength-box", hidden: true }, [strengthTitle, strengthRow]);
    body.append(row, strengthBox);
    slot.sync = () => {
      const value = answerOf(q, null) || {};
      slot.buttons.forEach((b) => b.setAttribute("aria-pressed", value.choice === b.dataset.value ? "true" : "false"));
      const asks = q.strength > 0 && (value.choice === "A" || value.choice === "B");
      strengthBox.hidden = !asks;
      strengthRow.hidden = !asks;
      slot.strengthButtons.forEach((b, i) => b.setAttribute("aria-pressed", value.strength === i + 1 ? "true" : "false"));
    };
    slot.answered = () => {
      const value = answerOf(q, null);
      return Boolean(value && value.choice && (value.choice === "tie" || !q.strength || value.strength));
    };
  }

  function matrixHead(q) {
    const cells = el("div", { class: "scale matrix-anchors scale-" + q.scale, "aria-hidden": "true" });
    const anchors = q.anchors || {};
    for (let point = 1; point <= q.scale; point++) {
      const edge = point === 1 ? " first" : point === q.scale ? " last" : "";
      cells.append(el("span", { class: "matrix-anchor" + edge, text: anchors[String(point)] || "" }));
    }
    return el("div", { class: "matrix-head" }, [el("span"), cells]);
  }

  function renderItem(lease) {
    const item = lease.item;
    const questions = (lease.schema.definition && lease.schema.definition.questions) || [];
    const stored = storage.get(STORAGE_PREFIX + lease.assignment.id);
    state = {
      lease: lease,
      assignmentId: lease.assignment.id,
      item: item,
      questions: questions,
      byKey: Object.fromEntries(questions.map((q) => [q.key, q])),
      assistantTurns: item.messages.filter((m) => m.role === "assistant").map((m) => m.id),
      answers: stored && stored.answers && typeof stored.answers === "object" ? stored.answers : {},
      idempotencyKey: (stored && stored.idempotencyKey) || uuid(),
      timeMs: stored && typeof stored.timeMs === "number" ? stored.timeMs : 0,
      messageInfo: {},
      slots: [],
      active: 0,
      saving: false,
      done: false,
    };
    visibleSince = document.visibilityState === "visible" ? performance.now() : null;
    lastHeartbeat = Date.now();
    persist();

    $("item-ref").textContent = interpolate(gettext("Item %s"), [String(item.external_id)]);
    updateProgress(lease.progress);

    const convo = el("div", { class: "convo" });
    const side = el("aside", { class: "side", "aria-label": gettext("Questions") });
    const perTurn = questions.filter((q) => q.scope === "assistant_turn");
    const hasPerTurn = perTurn.length > 0;

    for (const message of item.messages) {
      const box = messageBox(message);
      if (message.role === "assistant" && hasPerTurn) {
        const turnBox = el("div", { class: "turn-questions", "aria-label": gettext("Questions about this reply") });
        for (const q of perTurn) {
          const slot = makeSlot(q, message.id);
          state.slots.push(slot);
          turnBox.append(slot.el);
        }
        convo.append(el("div", { class: "row row-assistant with-questions" }, [box, turnBox]));
      } else {
        convo.append(el("div", { class: "row row-" + message.role }, [box]));
      }
    }

    if (item.candidates && item.candidates.length) {
      const pair = el("div", { class: "pair" });
      for (const candidate of item.candidates) {
        const letter = String(candidate.id).toUpperCase();
        pair.append(messageBox(candidate, "candidate", interpolate(gettext("Reply %s"), [letter])));
      }
      convo.append(pair);
      for (const q of questions) {
        if (q.type !== "preference") continue;
        const slot = makeSlot(q, null);
        state.slots.push(slot);
        convo.append(el("div", { class: "pref-row" }, [slot.el]));
      }
    }

    // Consecutive ratings on the same scale and anchors form one compact matrix whose header
    // shows the anchors once.
    const sideQuestions = questions.filter((q) => q.scope !== "assistant_turn" && q.type !== "preference");
    const scaleOf = (q) => (q && q.type === "rating" ? q.scale + ":" + JSON.stringify(q.anchors || {}) : null);
    let matrix = null;
    sideQuestions.forEach((q, i) => {
      const key = scaleOf(q);
      const startsRun = key !== null && key !== scaleOf(sideQuestions[i - 1]) && key === scaleOf(sideQuestions[i + 1]);
      if (key === null || (matrix && matrix.key !== key)) matrix = null;
      if (startsRun) {
        matrix = { key: key, el: el("div", { class: "matrix scale-" + q.scale }, [matrixHead(q)]) };
        side.append(matrix.el);
      }
      const slot = makeSlot(q, null);
      state.slots.push(slot);
      (matrix ? matrix.el : side).append(slot.el);
    });

    const submit = el("button", { type: "button", class: "primary submit", id: "submit" }, [gettext("Submit"), " ", kbd("Enter")]);
    submit.addEventListener("click", () => submitAnswers());
    const skip = el("button", { type: "button", class: "ghost skip", id: "skip" }, [gettext("Skip"), " ", kbd("s"), kbd("s")]);
    skip.addEventListener("click", () => armSkip());
    const note = el("p", { class: "muted small save-note", id: "save-note" });
    side.append(el("div", { class: "actions-bar" }, [submit, skip]), note);
    if (!questions.length) side.prepend(el("p", { class: "muted", text: gettext("This schema asks no questions.") }));

    stage.replaceChildren(el("div", { class: "layout" + (hasPerTurn ? " has-turns" : "") }, [convo, side]));
    if (stored && stored.answers && Object.keys(stored.answers).length) {
      status.show(gettext("Your unsaved answers to this item were restored."), "info");
    }
    if (lease.resumed && !stored) status.show(gettext("You were already working on this item."), "info");
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    refresh();
    state.active = firstVisible(0, 1);
    paintActive(false);
    window.scrollTo(0, 0);
  }

  // ---------------------------------------------------------------------------------------
  // Changes and the active-question cursor.

  function visible(slot) {
    if (slot.q.type === "preference" && !state.item.candidates) return false;
    return shown(slot.q, slot.turn);
  }

  function refresh() {
    for (const slot of state.slots) {
      slot.el.hidden = !visible(slot);
      slot.sync();
      slot.el.classList.toggle("answered", slot.answered());
    }
    for (const matrix of stage.querySelectorAll(".matrix")) {
      matrix.hidden = !matrix.querySelector(".q:not([hidden])");
    }
    const activeSlot = state.slots[state.active];
    if (activeSlot && activeSlot.el.hidden) {
      state.active = firstVisible(state.active, 1);
      paintActive(false);
    }
  }

  function changed(slot, advance) {
    slot.error.hidden = true;
    slot.el.classList.remove("invalid");
    persist();
    refresh();
    if (advance) {
      const index = state.slots.indexOf(slot);
      const next = firstVisible(index + 1, 1, true);
      if (next !== null) activate(next, true);
    }
  }

  function firstVisible(from, step, strict) {
    const n = state.slots.length;
    for (let k = 0; k < n; k++) {
      const i = from + k * step;
      if (i < 0 || i >= n) break;
      if (!state.slots[i].el.hidden) return i;
    }
    if (strict) return null;
    for (let i = 0; i < n; i++) if (!state.slots[i].el.hidden) return i;
    return 0;
  }

  function paintActive(scroll) {
    state.slots.forEach((slot, i) => slot.el.classList.toggle("active", i === state.active));
    const slot = state.slots[state.active];
    if (slot && scroll) slot.el.scrollIntoView({ block: "nearest" });
  }

  function activate(index, scroll, focusText) {
    if (index === null || index < 0 || !state.slots[index]) return;
    state.active = index;
    paintActive(scroll);
    const slot = state.slots[index];
    if (focusText && slot.field) slot.field.focus();
    else if (document.activeElement && document.activeElement.classList.contains("text-answer") && !slot.el.contains(document.activeElement)) document.activeElement.blur();
  }

  function move(step) {
    const n = state.slots.length;
    if (!n) return;
    let i = state.active;
    for (let k = 0; k < n; k++) {
      i = (i + step + n) % n;
      if (!state.slots[i].el.hidden) break;
    }
    activate(i, true, true);
  }

  function choose(slot, value, advance) {
    if (state.saving) return;
    const q = slot.q;
    if (q.type === "multi_choice") {
      let chosen = Array.isArray(answerOf(q, slot.turn)) ? answerOf(q, slot.turn).slice() : [];
      const exclusive = q.exclusive || [];
      if (chosen.includes(value)) chosen = chosen.filter((v) => v !== value);
      else if (exclusive.includes(value)) chosen = [value];
      else chosen = chosen.filter((v) => !exclusive.includes(v)).concat([value]);
      setAnswer(q, slot.turn, chosen.length ? chosen : undefined);
      changed(slot, false);
      return;
    }
    setAnswer(q, slot.turn, value);
    changed(slot, advance);
  }

  function choosePreference(slot, value, advance) {
    if (state.saving) return;
    const current = answerOf(slot.q, null) || {};
    const next = { choice: value };
    if (value !== "tie" && current.choice === value && current.strength) next.strength = current.strength;
    setAnswer(slot.q, null, next);
    changed(slot, advance && (value === "tie" || !slot.q.strength || Boolean(next.strength)));
  }

  function chooseStrength(slot, strength, advance) {
    if (state.saving) return;
    const current = answerOf(slot.q, null) || {};
    if (current.choice !== "A" && current.choice !== "B") return;
    setAnswer(slot.q, null, { choice: current.choice, strength: strength });
    changed(slot, advance);
  }

  // ---------------------------------------------------------------------------------------
  // Spans.

  function selectionTarget() {
    const selection = window.getSelection();
    if (!selection || selection.rangeCount === 0 || selection.isCollapsed) return null;
    const range = selection.getRangeAt(0);
    const within = (node) => {
      const element = node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement;
      return element ? element.closest(".content[data-message]") : null;
    };
    const startBox = within(range.startContainer);
    const endBox = within(range.endContainer);
    if (startBox && endBox && startBox !== endBox) return { error: gettext("Select text inside one message.") };
    const box = startBox || endBox;
    if (!box) return null;
    const info = state.messageInfo[box.dataset.message];
    if (!info) return null;
    let a = boundary(box, range.startContainer, range.startOffset, true);
    let b = boundary(box, range.endContainer, range.endOffset, false);
    if (a === null || b === null) return null;
    while (a < b && /\s/.test(info.raw[a])) a++;
    while (b > a && /\s/.test(info.raw[b - 1])) b--;
    if (a >= b) return null;
    return { info: info, start: info.cp[a], end: info.cp[b], text: info.raw.slice(a, b) };
  }

  // A selection boundary as a UTF-16 index into the raw content: inside a segment it is that
  // segment's offset plus the offset in its text; elsewhere it snaps to the nearest segment.
  function boundary(box, node, offset, isStart) {
    const segs = box.querySelectorAll(".seg");
    const probe = document.createRange();
    // A boundary at the very end (start) or very start (end) of a segment snaps to the next
    // (previous) segment, so markup between them never leaks into the span.
    let fallback = null;
    if (isStart) {
      for (const seg of segs) {
        const text = seg.firstChild;
        if (!text) continue;
        const u = Number(seg.dataset.u);
        if (fallback !== null) return u;
        if (node === text) {
          if (offset < text.length) return u + offset;
          fallback = u + text.length;
          continue;
        }
        probe.setStart(text, text.length);
        probe.collapse(true);
        if (probe.comparePoint(node, offset) < 0) return u;
      }
      return fallback;
    }
    for (let k = segs.length - 1; k >= 0; k--) {
      const text = segs[k].firstChild;
      if (!text) continue;
      const u = Number(segs[k].dataset.u);
      if (fallback !== null) return u + text.length;
      if (node === text) {
        if (offset > 0) return u + Math.min(offset, text.length);
        fallback = u;
        continue;
      }
      probe.setStart(text, 0);
      probe.collapse(true);
      if (probe.comparePoint(node, offset) > 0) return u + text.length;
    }
    return fallback;
  }

  function addSpanFromSelection(slot, label) {
    if (state.saving) return false;
    const target = selectionTarget();
    if (!target) {
      status.show(gettext("First select some text in a message."), "warn");
      return false;
    }
    if (target.error) {
      status.show(target.error, "warn");
      return false;
    }
    const q = slot.q;
    if (!q.roles.includes(target.info.role)) {
      status.show(interpolate(gettext("This label cannot be used on %s messages."), [roleLabel(target.info.role)]), "warn");
      return false;
    }
    const spans = (state.answers[q.key] || []).slice();
    const span = { message: target.info.id, start: target.start, end: target.end, label: label, text: target.text };
    if (spans.some((s) => s.message === span.message && s.start === span.start && s.end === span.end && s.label === span.label)) {
      status.show(gettext("That text already has this label."), "warn");
      return false;
    }
    spans.push(span);
    state.answers[q.key] = spans;
    window.getSelection().removeAllRanges();
    renderContent(target.info);
    activate(state.slots.indexOf(slot), false);
    changed(slot, false);
    return true;
  }

  function removeSpan(slot, index) {
    if (state.saving) return;
    const spans = (state.answers[slot.q.key] || []).slice();
    const [removed] = spans.splice(index, 1);
    if (!removed) return;
    if (spans.length) state.answers[slot.q.key] = spans;
    else delete state.answers[slot.q.key];
    const info = state.messageInfo[removed.message];
    if (info) renderContent(info);
    changed(slot, false);
  }

  // ---------------------------------------------------------------------------------------
  // Talking to the server.

  async function loadNext() {
    state = null;
    stage.replaceChildren(el("p", { class: "muted loading", text: gettext("Loading the next item…") }));
    for (let attempt = 0; ; attempt++) {
      let result;
      try {
        result = await post(config.urls.next);
      } catch (_) {
        result = null;
      }
      if (result && result.status === 200 && result.data) {
        renderItem(result.data);
        return;
      }
      if (result && result.status === 204) {
        showEnd(gettext("Nothing left for you here: all items have their ratings. Thank you!"), "empty-state");
        return;
      }
      if (result && result.status === 409 && result.data && result.data.code === "no_schema") {
        showEnd(gettext("The project admin has not published any questions yet, so there is nothing to label. Please come back later."), "no-schema");
        return;
      }
      if (result && result.status < 500 && result.status !== 429) {
        const message = (result.data && result.data.message) || interpolate(gettext("The server answered %s."), [String(result.status)]);
        showEnd(message, "load-error", true);
        return;
      }
      const wait = backoff(attempt);
      status.show(interpolate(gettext("Cannot reach the server; trying again in %s s…"), [String(Math.round(wait / 1000))]), "warn", true);
      await sleep(wait);
    }
  }

  function showEnd(text, kind, retry) {
    state = null;
    const back = el("a", { href: config.urls.home, class: "button" + (retry ? "" : " primary"), text: gettext("Back to my projects") });
    const box = el("section", { class: "card end " + kind }, [el("p", { class: "end-text", text: text }), el("p", {}, [back])]);
    if (retry) {
      const again = el("button", { type: "button", class: "primary", text: gettext("Try again") });
      again.addEventListener("click", () => loadNext());
      box.lastChild.prepend(again, " ");
    }
    stage.replaceChildren(box);
    if (kind !== "load-error") status.clear();
  }

  async function submitAnswers() {
    if (!state || state.saving || state.done) return;
    let firstError = null;
    for (const slot of state.slots) {
      if (slot.el.hidden) continue;
      const problem = missing(slot);
      slot.error.hidden = !problem;
      slot.error.textContent = problem || "";
      slot.el.classList.toggle("invalid", Boolean(problem));
      if (problem && firstError === null) firstError = state.slots.indexOf(slot);
    }
    if (firstError !== null) {
      activate(firstError, true);
      status.show(gettext("Some questions still need an answer."), "error");
      return;
    }
    const current = state;
    current.saving = true;
    $("submit").disabled = true;
    refresh();
    persist();
    const body = { answers: buildAnswers(), idempotency_key: current.idempotencyKey, time_spent_ms: elapsedMs() };
    const url = config.urls.assignments + current.assignmentId + "/submit/";
    status.show(gettext("Saving…"), "info", true);
    for (let attempt = 0; ; attempt++) {
      let result = null;
      try {
        result = await post(url, body);
      } catch (_) {
        result = null;
      }
      if (state !== current) return;
      if (result && (result.status === 201 || result.status === 200)) {
        current.done = true;
        storage.remove(STORAGE_PREFIX + current.assignmentId);
        status.show(gettext("Saved."), "ok");
        loadNext();
        return;
      }
      if (result && result.status === 409) {
        current.done = true;
        storage.remove(STORAGE_PREFIX + current.assignmentId);
        const message = (result.data && result.data.message) || gettext("This item is closed.");
        await loadNext();
        status.show(message + " " + gettext("Here is the next item."), "warn", true);
        return;
      }
      if (result && result.status === 400) {
        current.saving = false;
        $("submit").disabled = false;
        refresh();
        showErrors(result.data);
        return;
      }
      if (result && (result.status === 401 || result.status === 403)) {
        current.saving = false;
        $("submit").disabled = false;
        refresh();
        status.show(gettext("You are logged out or your session changed. Log in again in another tab, then submit again: your answers are kept."), "error", true);
        return;
      }
      if (result && result.status < 500 && result.status !== 429) {
        current.saving = false;
        $("submit").disabled = false;
        refresh();
        status.show((result.data && result.data.message) || interpolate(gettext("The server answered %s."), [String(result.status)]), "error", true);
        return;
      }
      const wait = backoff(attempt);
      status.show(interpolate(gettext("Saving… retrying in %s s. Your answers are kept."), [String(Math.round(wait / 1000))]), "warn", true);
      $("save-note").textContent = gettext("Saving… retrying");
      await sleep(wait);
      if (state !== current) return;
    }
  }

  function slotForField(field) {
    const m = /^[a-z][a-z0-9_]*/.exec(field || "");
    if (!m) return null;
    const q = state.byKey[m[0]];
    if (!q) return null;
    if (q.scope !== "assistant_turn") return state.slots.find((s) => s.q === q) || null;
    const rest = field.slice(m[0].length + 1);
    let best = null;
    for (const turn of state.assistantTurns) {
      if (rest === turn || rest.startsWith(turn + ".") || rest.startsWith(turn + "[")) {
        if (!best || turn.length > best.length) best = turn;
      }
    }
    return state.slots.find((s) => s.q === q && s.turn === best) || state.slots.find((s) => s.q === q) || null;
  }

  function showErrors(data) {
    const errors = (data && data.extra && data.extra.errors) || [{ field: "", message: (data && data.message) || gettext("The answers were not accepted.") }];
    let first = null;
    const general = [];
    for (const slot of state.slots) {
      slot.error.hidden = true;
      slot.error.textContent = "";
    }
    for (const error of errors) {
      const slot = slotForField(error.field);
      if (!slot) {
        general.push((error.field ? error.field + ": " : "") + error.message);
        continue;
      }
      slot.error.textContent = (slot.error.textContent ? slot.error.textContent + " " : "") + error.message;
      slot.error.hidden = false;
      slot.el.classList.add("invalid");
      if (first === null || state.slots.indexOf(slot) < first) first = state.slots.indexOf(slot);
    }
    if (first !== null) activate(first, true);
    status.show(general.length ? general.join(" ") : gettext("Some answers need a fix; see the marked questions."), "error", true);
  }

  function armSkip() {
    if (!state || state.saving || state.done) return;
    const now = Date.now();
    if (now - skipArmedAt <= SKIP_WINDOW_MS) {
      skipArmedAt = 0;
      skipItem();
      return;
    }
    skipArmedAt = now;
    status.show(gettext("Press S again to skip this item."), "warn");
  }

  async function skipItem() {
    const current = state;
    current.saving = true;
    status.show(gettext("Skipping…"), "info", true);
    let result = null;
    try {
      result = await post(config.urls.assignments + current.assignmentId + "/skip/");
    } catch (_) {
      result = null;
    }
    if (state !== current) return;
    if (result && (result.status === 200 || result.status === 409)) {
      current.done = true;
      storage.remove(STORAGE_PREFIX + current.assignmentId);
      status.show(gettext("Skipped."), "ok");
      loadNext();
      return;
    }
    current.saving = false;
    refresh();
    status.show(gettext("The item could not be skipped; try again."), "error");
  }

  async function heartbeat() {
    if (!state || state.saving || state.done || document.visibilityState !== "visible") return;
    const current = state;
    lastHeartbeat = Date.now();
    let result = null;
    try {
      result = await post(config.urls.assignments + current.assignmentId + "/heartbeat/");
    } catch (_) {
      return; // the next beat tries again; a submit retries on its own
    }
    if (state === current && result && result.status === 409) {
      status.show(gettext("Your hold on this item has ended. You can still submit; if someone else took the item, you will get the next one."), "warn", true);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Keyboard.

  function helpOpen() {
    return !$("help").hidden;
  }

  function toggleHelp(open) {
    const help = $("help");
    const show = open === undefined ? help.hidden : open;
    help.hidden = !show;
    if (show) {
      $("help-close").focus({ preventScroll: true });
      help.querySelector(".overlay-box").scrollTop = 0;
    }
    else if (document.activeElement === $("help-close")) $("help-close").blur();
  }

  function hotkey(key) {
    const lower = key.length === 1 ? key.toLowerCase() : key;
    const active = state.slots[state.active];

    // With text selected in a message, a span label's key marks it.
    const selection = window.getSelection();
    if (selection && !selection.isCollapsed) {
      const spanSlots = state.slots.filter((s) => s.q.type === "span" && !s.el.hidden);
      if (active && active.q.type === "span") spanSlots.unshift(active);
      for (const slot of spanSlots) {
        if (slot.labelKeys[lower] !== undefined) {
          addSpanFromSelection(slot, slot.labelKeys[lower]);
          return true;
        }
      }
    }

    if (active && !active.el.hidden && answerKey(active, lower)) return true;
    if (lower === "j") {
      move(1);
      return true;
    }
    if (lower === "k") {
      move(-1);
      return true;
    }
    if (/^[0-9]$/.test(lower)) return false;
    // Otherwise the first question after the active one that has an option on this key.
    const n = state.slots.length;
    for (let k = 1; k < n; k++) {
      const slot = state.slots[(state.active + k) % n];
      if (slot.el.hidden || (slot.q.type !== "choice" && slot.q.type !== "multi_choice")) continue;
      const option = slot.q.options.find((o) => o.hotkey && o.hotkey.toLowerCase() === lower);
      if (option) {
        activate(state.slots.indexOf(slot), true);
        choose(slot, option.value, true);
        return true;
      }
    }
    return false;
  }

  function answerKey(slot, key) {
    const q = slot.q;
    if (q.type === "choice" || q.type === "multi_choice" || q.type === "rating") {
      if (slot.keys[key] === undefined) return false;
      choose(slot, slot.keys[key], q.type !== "multi_choice");
      return true;
    }
    if (q.type === "preference") {
      if (slot.keys[key] !== undefined) {
        choosePreference(slot, slot.keys[key], true);
        return true;
      }
      if (/^[1-9]$/.test(key) && Number(key) <= q.strength) {
        chooseStrength(slot, Number(key), true);
        return true;
      }
    }
    return false;
  }

  function onKey(ev) {
    if (ev.defaultPrevented || ev.isComposing) return;
    const target = ev.target;
    if (helpOpen()) {
      if (ev.key === "Escape" || ev.key === "?") {
        ev.preventDefault();
        toggleHelp(false);
      }
      return;
    }
    if (ev.key === "Escape") {
      if (isTyping(target)) target.blur();
      else if (window.getSelection()) window.getSelection().removeAllRanges();
      return;
    }
    if (isTyping(target)) {
      if (!state || !target.closest(".q")) return;
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey || target.tagName === "INPUT")) {
        ev.preventDefault();
        submitAnswers();
      } else if (ev.key === "Tab" && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        target.blur();
        move(ev.shiftKey ? -1 : 1);
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key === "?") {
      ev.preventDefault();
      toggleHelp();
      return;
    }
    if (!state || state.done) return;
    let handled = true;
    switch (ev.key) {
      case "Tab":
        move(ev.shiftKey ? -1 : 1);
        break;
      case "ArrowDown":
        move(1);
        break;
      case "ArrowUp":
        move(-1);
        break;
      case "Enter":
        submitAnswers();
        break;
      case "s":
      case "S":
        armSkip();
        break;
      case "Backspace":
      case "Delete": {
        const slot = state.slots[state.active];
        if (slot && slot.q.type === "span" && (state.answers[slot.q.key] || []).length) {
          removeSpan(slot, state.answers[slot.q.key].length - 1);
        } else handled = false;
        break;
      }
      default:
        handled = ev.key.length === 1 && hotkey(ev.key);
    }
    if (handled) ev.preventDefault();
  }

  // ---------------------------------------------------------------------------------------
  // Start.

  function setUpGuidelines() {
    const panel = $("guidelines");
    if (!panel) return;
    Markdown.render(guidelines, $("guidelines-body"));
    const key = "annotator.guidelines." + config.project.slug;
    const seen = storage.get(key);
    panel.open = seen === null ? true : Boolean(seen.open);
    panel.addEventListener("toggle", () => {
      storage.set(key, { open: panel.open });
      // Hand the keyboard back to the questions (Enter would toggle the panel again).
      if (document.activeElement && panel.contains(document.activeElement)) document.activeElement.blur();
    });
  }

  function start() {
    storage.prune();
    setUpGuidelines();
    document.addEventListener("keydown", onKey);
    $("help-open").addEventListener("click", () => toggleHelp(true));
    $("help-close").addEventListener("click", () => toggleHelp(false));
    $("help").addEventListener("click", (ev) => {
      if (ev.target === $("help")) toggleHelp(false);
    });
    $("raw-toggle").addEventListener("click", () => {
      raw = !raw;
      $("raw-toggle").setAttribute("aria-pressed", raw ? "true" : "false");
      if (state) Object.values(state.messageInfo).forEach(renderContent);
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") {
        visibleSince = performance.now();
        if (Date.now() - lastHeartbeat > HEARTBEAT_MS) heartbeat();
      } else {
        if (state && visibleSince !== null) state.timeMs += performance.now() - visibleSince;
        visibleSince = null;
        persist();
      }
    });
    window.addEventListener("pagehide", persist);
    window.setInterval(heartbeat, HEARTBEAT_MS);
    window.setInterval(persist, 15000);
    loadNext();
  }

  start();
})();
