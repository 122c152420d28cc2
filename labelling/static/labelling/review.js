/* The review page: renders one item and every rater's answers, then approve / reject / correct.
 *
 * All item, answer and schema text is untrusted: it goes into the DOM as text only, through
 * conversation.js's el() and Markdown renderer, never innerHTML.
 */
(function () {
  "use strict";

  const { gettext, interpolate, el, kbd, Markdown, isTyping, optionKeys } =
    window.annotatorConversation;
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("review-config").textContent);
  const LANG_RE = /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/;

  const item = config.item;
  const questions = (config.schema && config.schema.questions) || [];
  const byKey = Object.fromEntries(questions.map((q) => [q.key, q]));
  const turns = item
    ? item.messages.filter((m) => m.role === "assistant").map((m) => m.id).concat((item.candidates || []).map((c) => c.id))
    : [];
  let correcting = false;
  let saving = false;
  let slots = [];
  let active = 0;
  let answers = {};

  const status = window.annotatorConversation.statusLine(5000);

  function roleLabel(role) {
    return { user: gettext("User"), assistant: gettext("Assistant"), system: gettext("System"), tool: gettext("Tool") }[role] || role;
  }

  // ---------------------------------------------------------------------------------------
  // The conversation.

  function messageBox(message, extraClass, heading) {
    const lang = item.language && LANG_RE.test(item.language) ? item.language : null;
    const content = el("div", { class: "content md", dir: "auto", lang: lang, "data-message": message.id });
    const head = el("div", { class: "role" }, [heading || roleLabel(message.role)]);
    if (message.name) head.append(el("span", { class: "muted", text: " · " + String(message.name) }));
    const raw = typeof message.content === "string" ? message.content : JSON.stringify(message.content);
    Markdown.render(raw, content);
    return el("article", { class: "msg msg-" + message.role + (extraClass ? " " + extraClass : ""), "data-message": message.id }, [head, content]);
  }

  function renderConversation() {
    const convo = $("convo");
    for (const message of item.messages) {
      convo.append(el("div", { class: "row row-" + message.role }, [messageBox(message)]));
    }
    if (item.candidates.length) {
      const pair = el("div", { class: "pair" });
      for (const candidate of item.candidates) {
        pair.append(messageBox(candidate, "candidate", interpolate(gettext("Reply %s"), [String(candidate.id).toUpperCase()])));
      }
      convo.append(pair);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Answers side by side.

  function optionLabel(q, value) {
    const option = (q.options || q.labels || []).find((o) => o.value === value);
    return option ? option.label : String(value);
  }

  function turnLabel(turn) {
    const index = item.messages.filter((m) => m.role === "assistant").map((m) => m.id).indexOf(turn);
    return index >= 0 ? interpolate(gettext("reply %s"), [String(index + 1)]) : interpolate(gettext("reply %s"), [String(turn).toUpperCase()]);
  }

  function formatValue(q, value) {
    if (value === undefined || value === null) return "";
    switch (q.type) {
      case "choice":
        return optionLabel(q, value);
      case "multi_choice":
        return Array.isArray(value) ? value.map((v) => optionLabel(q, v)).join(", ") : String(value);
      case "span":
        return Array.isArray(value) ? value.map((s) => optionLabel(q, s.label) + ": “" + String(s.text || "") + "”").join("; ") : "";
      case "preference": {
        if (!value || typeof value !== "object") return String(value);
        const choice = value.choice === "tie" ? gettext("Tie") : interpolate(gettext("Reply %s"), [String(value.choice)]);
        return value.strength ? choice + " (" + String(value.strength) + ")" : choice;
      }
      default:
        return typeof value === "object" ? JSON.stringify(value) : String(value);
    }
  }

  // A value in a form that compares equal whatever the order of a set.
  function normal(q, value) {
    if (value === undefined || value === null) return null;
    if (q.type === "multi_choice" && Array.isArray(value)) return JSON.stringify(value.slice().sort());
    if (q.type === "preference" && typeof value === "object") return String(value.choice);
    return JSON.stringify(value);
  }

  function rows() {
    const out = [];
    for (const q of questions) {
      if (q.type === "preference" && !item.candidates.length) continue;
      if (q.scope === "assistant_turn") for (const turn of turns) out.push({ q: q, turn: turn, key: q.key + "." + turn });
      else out.push({ q: q, turn: null, key: q.key });
    }
    return out;
  }

  function answerIn(source, row) {
    const value = source[row.q.key];
    if (row.turn === null) return value;
    return value && typeof value === "object" ? value[row.turn] : undefined;
  }

  function renderAnswers() {
    const raters = config.annotations;
    const head = el("tr", {}, [el("th", { scope: "col", text: gettext("Question") })]);
    for (const a of raters) head.append(el("th", { scope: "col", class: "rater", text: a.rater }));
    head.append(el("th", { scope: "col", class: "consensus", text: gettext("Consensus · agreement") }));
    const body = el("tbody");
    for (const row of rows()) {
      const entry = item.consensus[row.key] || {};
      const hasConsensus = Object.prototype.hasOwnProperty.call(entry, "value");
      const title = el("th", { scope: "row" }, [el("span", { text: row.q.title || row.q.key })]);
      if (row.turn !== null) title.append(el("span", { class: "muted turn-ref", text: " · " + turnLabel(row.turn) }));
      const tr = el("tr", { "data-row": row.key }, [title]);
      const values = raters.map((a) => answerIn(a.answers, row));
      const distinct = new Set(values.filter((v) => v !== undefined && v !== null).map((v) => normal(row.q, v)));
      for (const value of values) {
        const differs = hasConsensus ? normal(row.q, value) !== normal(row.q, entry.value) : row.q.type !== "text" && distinct.size > 1;
        const cell = el("td", { class: "answer" + (differs && value !== undefined ? " disagree" : "") + (row.q.type === "text" ? " text" : ""), dir: "auto" });
        if (value === undefined || value === null) cell.append(el("span", { class: "muted", text: "—" }));
        else cell.textContent = formatValue(row.q, value);
        tr.append(cell);
      }
      const last = el("td", { class: "consensus" });
      if (hasConsensus) {
        last.append(el("strong", { text: formatValue(row.q, entry.value) }));
        if (entry.reviewed) last.append(el("span", { class: "muted", text: " · " + gettext("reviewed") }));
        else if (entry.agreement !== undefined && entry.agreement !== null) {
          last.append(el("span", { class: "agree " + (entry.agreement >= 0.8 ? "ok" : "low"), text: " · " + Math.round(entry.agreement * 100) + "%" }));
        }
      } else {
        last.append(el("span", { class: "muted", text: "—" }));
      }
      tr.append(last);
      body.append(tr);
    }
    const table = el("table", { class: "list side-by-side", id: "side-by-side" }, [el("thead", {}, [head]), body]);
    $("answers").replaceChildren(raters.length ? table : el("p", { class: "muted", text: gettext("No rater has answered this item yet.") }));
  }

  // ---------------------------------------------------------------------------------------
  // The correction form: the schema's questions, prefilled with the consensus.


  function valueOf(slot) {
    return answerIn(answers, slot);
  }

  function setValue(slot, value) {
    if (slot.turn === null) {
      if (value === undefined) delete answers[slot.q.key];
      else answers[slot.q.key] = value;
      return;
    }
    const per = answers[slot.q.key] && typeof answers[slot.q.key] === "object" ? answers[slot.q.key] : {};
    if (value === undefined) delete per[slot.turn];
    else per[slot.turn] = value;
    answers[slot.q.key] = per;
  }

  function shown(q, turn) {
    const cond = q.show_if;
    if (!cond) return true;
    const ref = byKey[cond.question];
    if (!ref) return false;
    const given = answerIn(answers, { q: ref, turn: ref.scope === "assistant_turn" ? turn : null });
    if (given === undefined || given === null) return false;
    if (ref.type === "multi_choice") return Array.isArray(given) && given.includes(cond.equals);
    return given === cond.equals;
  }

  function button(label, key, extra) {
    const b = el("button", { type: "button", class: "opt" + (extra ? " " + extra : ""), "aria-pressed": "false" });
    if (key) b.append(kbd(key));
    b.append(el("span", { class: "opt-label", text: label }));
    return b;
  }

  function makeSlot(row) {
    const q = row.q;
    const slot = { q: q, turn: row.turn, key: row.key, keys: {}, buttons: [] };
    const title = el("span", { class: "q-title", dir: "auto", text: q.title || q.key });
    const head = el("div", { class: "q-head" }, [title]);
    if (row.turn !== null) head.append(el("span", { class: "muted turn-ref", text: turnLabel(row.turn) }));
    const bodyNode = el("div", { class: "q-body" });
    slot.el = el("section", { class: "q q-" + q.type, "data-q": q.key, "data-turn": row.turn, role: "group", "aria-label": q.title || q.key }, [head, bodyNode]);
    slot.el.addEventListener("mousedown", () => activate(slots.indexOf(slot)));
    slot.el.addEventListener("focusin", () => activate(slots.indexOf(slot)));
    const pick = (value) => {
      if (q.type === "multi_choice") {
        const now = Array.isArray(valueOf(slot)) ? valueOf(slot).slice() : [];
        const i = now.indexOf(value);
        if (i >= 0) now.splice(i, 1);
        else now.push(value);
        setValue(slot, now.length ? now : undefined);
      } else if (q.type === "preference") {
        setValue(slot, { choice: value });
      } else {
        setValue(slot, value);
      }
      refresh();
    };
    slot.pick = pick;
    if (q.type === "choice" || q.type === "multi_choice") {
      const keys = optionKeys(q.options || []);
      q.options.forEach((option, i) => {
        const b = button(option.label, keys[i], q.type === "multi_choice" ? "check" : "radio");
        b.dataset.value = option.value;
        b.addEventListener("click", () => pick(option.value));
        if (keys[i]) slot.keys[keys[i].toLowerCase()] = option.value;
        slot.buttons.push(b);
      });
      bodyNode.append(el("div", { class: "opts" }, slot.buttons));
    } else if (q.type === "rating") {
      for (let point = 1; point <= q.scale; point++) {
        const key = point === 10 ? "0" : point < 10 ? String(point) : null;
        const b = button(String(point), null, "pt");
        b.dataset.value = String(point);
        b.addEventListener("click", () => pick(point));
        if (key) slot.keys[key] = point;
        slot.buttons.push(b);
      }
      bodyNode.append(el("div", { class: "opts scale" }, slot.buttons));
    } else if (q.type === "preference") {
      const choices = [["A", "a"], ["B", "b"]].concat(q.allow_tie === false ? [] : [["tie", "="]]);
      for (const [value, key] of choices) {
        const b = button(value === "tie" ? gettext("Tie") : interpolate(gettext("Reply %s"), [value]), key, "radio");
        b.dataset.value = value;
        b.addEventListener("click", () => pick(value));
        slot.keys[key] = value;
        slot.buttons.push(b);
      }
      bodyNode.append(el("div", { class: "opts" }, slot.buttons));
      if (q.strength > 0) {
        slot.strengthButtons = [];
        for (let s = 1; s <= q.strength; s++) {
          const label = (q.strength_labels && q.strength_labels[s - 1]) || String(s);
          const b = button(label, String(s), "pt");
          b.dataset.value = String(s);
          b.addEventListener("click", () => {
            const now = valueOf(slot);
            if (now && now.choice && now.choice !== "tie") setValue(slot, { choice: now.choice, strength: s });
            refresh();
          });
          slot.strengthButtons.push(b);
        }
        bodyNode.append(el("div", { class: "opts strength" }, slot.strengthButtons));
      }
    } else if (q.type === "text") {
      const area = el("textarea", { rows: 2, dir: "auto", maxlength: q.max_length || null, placeholder: q.placeholder || null, "aria-label": q.title || q.key });
      area.value = typeof valueOf(slot) === "string" ? valueOf(slot) : "";
      area.addEventListener("input", () => setValue(slot, area.value.trim() ? area.value : undefined));
      slot.textarea = area;
      bodyNode.append(area);
    } else {
      // Spans are kept as the consensus merged them: marking text is the rater page's job.
      const spans = valueOf(slot) || [];
      bodyNode.append(el("p", { class: "muted small", text: spans.length ? formatValue(q, spans) : gettext("No spans marked.") }));
    }
    return slot;
  }

  function refresh() {
    for (const slot of slots) {
      slot.el.hidden = !shown(slot.q, slot.turn);
      const value = valueOf(slot);
      for (const b of slot.buttons) {
        let on;
        if (slot.q.type === "multi_choice") on = Array.isArray(value) && value.includes(b.dataset.value);
        else if (slot.q.type === "rating") on = value === Number(b.dataset.value);
        else if (slot.q.type === "preference") on = Boolean(value) && value.choice === b.dataset.value;
        else on = value === b.dataset.value;
        b.setAttribute("aria-pressed", on ? "true" : "false");
      }
      for (const b of slot.strengthButtons || []) {
        b.setAttribute("aria-pressed", value && value.strength === Number(b.dataset.value) ? "true" : "false");
      }
    }
    paintActive();
  }

  function paintActive() {
    slots.forEach((slot, i) => slot.el.classList.toggle("active", i === active));
  }

  function activate(index) {
    if (index < 0 || index >= slots.length) return;
    active = index;
    paintActive();
  }

  function move(step) {
    const n = slots.length;
    for (let k = 1; k <= n; k++) {
      const i = active + step * k;
      if (i < 0 || i >= n) return;
      if (!slots[i].el.hidden) {
        activate(i);
        slots[i].el.scrollIntoView({ block: "nearest" });
        if (slots[i].textarea) slots[i].textarea.focus();
        return;
      }
    }
  }

  function prefill() {
    answers = {};
    for (const row of rows()) {
      const entry = item.consensus[row.key];
      if (!entry || !Object.prototype.hasOwnProperty.call(entry, "value")) continue;
      let value = entry.value;
      if (row.q.type === "rating" && typeof value === "number") value = Math.round(value);
      if (row.q.type === "multi_choice" && Array.isArray(value) && !value.length) continue;
      if (row.q.type === "preference" && value && typeof value === "object") {
        value = value.strength ? { choice: value.choice, strength: Math.round(value.strength) } : { choice: value.choice };
      }
      setValue(row, value);
    }
  }

  function openCorrection() {
    if (correcting) return;
    correcting = true;
    prefill();
    slots = rows().map(makeSlot);
    $("correction-form").replaceChildren(...slots.map((s) => s.el));
    $("correction").hidden = false;
    $("correction-error").hidden = true;
    active = 0;
    refresh();
    const first = slots.findIndex((s) => !s.el.hidden);
    activate(first < 0 ? 0 : first);
    if (document.activeElement) document.activeElement.blur();
    $("correction").scrollIntoView({ block: "nearest" });
  }

  function closeCorrection() {
    correcting = false;
    $("correction").hidden = true;
    $("correction-form").replaceChildren();
    slots = [];
  }

  function finalAnswers() {
    const out = {};
    for (const slot of slots) {
      if (slot.el.hidden) continue;
      let value = valueOf(slot);
      if (value === undefined || value === null) continue;
      if (slot.q.type === "text") {
        value = String(value).trim();
        if (!value) continue;
      }
      if (slot.turn === null) out[slot.q.key] = value;
      else (out[slot.q.key] = out[slot.q.key] || {})[slot.turn] = value;
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------
  // Decisions.

  async function decide(action) {
    if (saving || !item) return;
    const body = { action: action, note: $("note").value };
    if (action === "correct") body.answers = finalAnswers();
    saving = true;
    for (const id of ["approve", "reject", "correct", "correct-submit"]) $(id).disabled = true;
    let result = null;
    try {
      const response = await fetch(config.urls.review, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": config.csrf_token, Accept: "application/json", "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
      result = { status: response.status, data: data };
    } catch (_) {
      result = null;
    }
    saving = false;
    for (const id of ["approve", "reject", "correct", "correct-submit"]) $(id).disabled = false;
    if (result && result.status === 201) {
      const done = { approve: gettext("Approved."), reject: gettext("Rejected."), correct: gettext("Corrected and approved.") }[action];
      status.show(done, "ok");
      // The next item (oldest waiting first) comes with the page.
      window.location.assign(config.urls.next);
      return;
    }
    const message = result
      ? (result.data && result.data.message) || interpolate(gettext("The server answered %s."), [String(result.status)])
      : gettext("Cannot reach the server; try again.");
    if (action === "correct") {
      $("correction-error").textContent = message;
      $("correction-error").hidden = false;
    }
    status.show(message, "error");
  }

  // ---------------------------------------------------------------------------------------
  // Keyboard.

  function toggleHelp(open) {
    const help = $("help");
    const show = open === undefined ? help.hidden : open;
    help.hidden = !show;
    if (show) $("help-close").focus({ preventScroll: true });
    else if (document.activeElement === $("help-close")) $("help-close").blur();
  }

  function correctionKey(key) {
    const slot = slots[active];
    if (key === "j") return move(1), true;
    if (key === "k") return move(-1), true;
    if (slot && !slot.el.hidden) {
      if (slot.q.type === "preference" && /^[1-9]$/.test(key) && slot.strengthButtons) {
        const b = slot.strengthButtons[Number(key) - 1];
        if (b) b.click();
        return Boolean(b);
      }
      if (slot.keys[key] !== undefined) {
        slot.pick(slot.keys[key]);
        if (slot.q.type !== "multi_choice" && !(slot.q.type === "preference" && slot.q.strength > 0 && key !== "=")) move(1);
        return true;
      }
    }
    // Otherwise the next question with an option on this key.
    for (let k = 1; k < slots.length; k++) {
      const other = slots[(active + k) % slots.length];
      if (other.el.hidden || (other.q.type !== "choice" && other.q.type !== "multi_choice")) continue;
      if (other.keys[key] !== undefined && !/^[0-9]$/.test(key)) {
        activate(slots.indexOf(other));
        other.pick(other.keys[key]);
        return true;
      }
    }
    return false;
  }

  function onKey(ev) {
    if (ev.altKey || ev.metaKey) return;
    const typing = isTyping(ev.target);
    if (ev.key === "Escape") {
      if (!$("help").hidden) toggleHelp(false);
      else if (typing) ev.target.blur();
      else if (correcting) closeCorrection();
      else return;
      ev.preventDefault();
      return;
    }
    if (!$("help").hidden) return;
    if (ev.key === "Enter" && correcting && (!typing || ev.ctrlKey)) {
      ev.preventDefault();
      decide("correct");
      return;
    }
    if (ev.key === "Enter" && typing && ev.ctrlKey && ev.target === $("note")) {
      ev.preventDefault();
      ev.target.blur();
      return;
    }
    if (typing || ev.ctrlKey) return;
    if (ev.key === "?") {
      ev.preventDefault();
      toggleHelp();
      return;
    }
    if (!item) return;
    if (correcting) {
      if (ev.key === "Tab" || ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        move(ev.key === "ArrowUp" || (ev.key === "Tab" && ev.shiftKey) ? -1 : 1);
        return;
      }
      if (ev.key.length === 1 && correctionKey(ev.key.toLowerCase())) ev.preventDefault();
      else if (ev.key.toLowerCase() === "n") {
        ev.preventDefault();
        $("note").focus();
      }
      return;
    }
    const key = ev.key.toLowerCase();
    if (key === "a" || key === "r") {
      ev.preventDefault();
      decide(key === "a" ? "approve" : "reject");
    } else if (key === "c") {
      ev.preventDefault();
      openCorrection();
    } else if (key === "n") {
      ev.preventDefault();
      $("note").focus();
    }
  }

  function start() {
    document.addEventListener("keydown", onKey);
    $("help-open").addEventListener("click", () => toggleHelp(true));
    $("help-close").addEventListener("click", () => toggleHelp(false));
    if (!item) return;
    renderConversation();
    renderAnswers();
    $("approve").addEventListener("click", () => decide("approve"));
    $("reject").addEventListener("click", () => decide("reject"));
    $("correct").addEventListener("click", () => openCorrection());
    $("correct-submit").addEventListener("click", () => decide("correct"));
    $("correct-cancel").addEventListener("click", () => closeCorrection());
  }

  start();
})();
