/* The explorer page: browse clusters, search, find similar items, act on many items at once,
 * release near-duplicates and compare model versions, all through the REST API.
 *
 * Every piece of item text is untrusted: the DOM is built with createElement(NS) and
 * textContent only (conversation.js), never innerHTML; links are built from numeric ids.
 */
(function () {
  "use strict";

  const { gettext, ngettext, interpolate, el, Markdown, isTyping } =
    window.annotatorConversation;
  const config = JSON.parse(document.getElementById("explorer-config").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG_NS = "http://www.w3.org/2000/svg";
  const PREVIEW_CHARS = 600;
  const POLL_MS = 2000;
  const PRIORITY_STEP = 1;
  const LANG_RE = /^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$/;
  const numberFormat = new Intl.NumberFormat(document.documentElement.lang || undefined);
  const percent = (x) => (x === null || x === undefined ? "—" : Math.round(x * 1000) / 10 + "%");
  const api = (path) => config.urls.api + path;

  // ---------------------------------------------------------------------------------------
  // Requests and the status line.

  function sameOrigin(url) {
    try {
      return new URL(url, window.location.href).origin === window.location.origin;
    } catch (_) {
      return false;
    }
  }

  async function request(method, url, body) {
    const headers = { Accept: "application/json" };
    const init = { method: method, credentials: "same-origin", headers: headers };
    if (method !== "GET") headers["X-CSRFToken"] = config.csrf_token;
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (_) {
      return { status: 0, data: null };
    }
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

  function errorText(result) {
    if (result.status === 0) return gettext("The server cannot be reached. Check your connection.");
    if (result.data && typeof result.data.message === "string") return result.data.message;
    return interpolate(gettext("The server answered %s."), [String(result.status)]);
  }

  const status = window.annotatorConversation.statusLine(5000);

  // A list answer may be a plain array or a page ({results, next}).
  function rowsOf(data) {
    if (Array.isArray(data)) return { rows: data, next: null };
    if (!data || typeof data !== "object") return { rows: [], next: null };
    const rows = data.results || data.items || data.similar || data.duplicates || [];
    const next = typeof data.next === "string" && sameOrigin(data.next) ? data.next : null;
    return { rows: Array.isArray(rows) ? rows : [], next: next };
  }

  // ---------------------------------------------------------------------------------------
  // Tabs.

  // Near-duplicates are for admins: the page leaves that tab out for reviewers.
  const TABS = ["clusters", "duplicates", "compare"].filter((name) => $("tab-" + name));
  const loaded = {};

  function showTab(name, focus) {
    for (const tab of TABS) {
      const on = tab === name;
      const button = $("tab-" + tab);
      button.setAttribute("aria-selected", on ? "true" : "false");
      button.tabIndex = on ? 0 : -1;
      $("panel-" + tab).hidden = !on;
      if (on && focus) button.focus();
    }
    if (!loaded[name]) {
      loaded[name] = true;
      if (name === "duplicates") loadDuplicates(api("duplicates/"), false);
      if (name === "compare") loadComparison();
    }
  }

  for (const tab of TABS) {
    $("tab-" + tab).addEventListener("click", () => showTab(tab, false));
    $("tab-" + tab).addEventListener("keydown", (event) => {
      const at = TABS.indexOf(tab);
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        event.preventDefault();
        const step = event.key === "ArrowRight" ? 1 : TABS.length - 1;
        showTab(TABS[(at + step) % TABS.length], true);
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Item cards: a checkbox, the reference, tags, and an inert preview of the conversation.

  function roleLabel(role) {
    return { user: gettext("User"), assistant: gettext("Assistant"), system: gettext("System"), tool: gettext("Tool") }[role] || String(role);
  }

  function preview(message, lang) {
    const raw = typeof message.content === "string" ? message.content : JSON.stringify(message.content);
    const cut = raw.length > PREVIEW_CHARS ? raw.slice(0, PREVIEW_CHARS) + " …" : raw;
    const content = el("div", { class: "content md", dir: "auto", lang: lang });
    Markdown.render(cut, content);
    return el("div", { class: "msg msg-" + String(message.role).replace(/[^a-z]/g, "") }, [
      el("div", { class: "role", text: roleLabel(message.role) }),
      content,
    ]);
  }

  function itemOf(row) {
    // Similar items may come as {item: {...}, similarity} or flat with a similarity field.
    if (row && row.item && typeof row.item === "object") return Object.assign({}, row.item, { similarity: row.similarity });
    return row || {};
  }

  function itemCard(row, options) {
    const item = itemOf(row);
    const id = Number(item.id);
    const lang = typeof item.language === "string" && LANG_RE.test(item.language) ? item.language : null;
    const box = el("input", { type: "checkbox", class: "pick", "data-item": id, "aria-label": interpolate(gettext("Select item %s"), [String(item.external_id || id)]) });
    const head = el("div", { class: "item-head" }, [
      el("label", { class: "pick-label" }, [box, el("span", { class: "ref", text: String(item.external_id || "#" + id) })]),
    ]);
    if (item.status) head.append(el("span", { class: "badge status-" + String(item.status).replace(/[^a-z_]/g, ""), text: String(item.status) }));
    if (item.hold) head.append(el("span", { class: "badge hold", text: String(item.hold) }));
    if (typeof item.similarity === "number") head.append(el("span", { class: "similarity", text: interpolate(gettext("similarity %s"), [item.similarity.toFixed(3)]) }));
    const tags = Array.isArray(item.tags) ? item.tags.map((t) => (typeof t === "string" ? t : t && t.name)).filter(Boolean) : [];
    const tagList = el("span", { class: "tags" }, tags.map((t) => el("span", { class: "tag", text: String(t) })));
    head.append(tagList);
    const messages = Array.isArray(item.messages) ? item.messages : [];
    const firstUser = messages.find((m) => m.role === "user");
    const lastReply = messages.filter((m) => m.role === "assistant").pop();
    const body = el("div", { class: "item-preview" });
    for (const m of [firstUser, lastReply]) if (m) body.append(preview(m, lang));
    for (const c of Array.isArray(item.candidates) ? item.candidates : []) body.append(preview(c, lang));
    if (!messages.length && typeof item.preview === "string") {
      // A brief row (search, similar, duplicates) carries a plain-text preview instead.
      const content = el("div", { class: "content md", dir: "auto", lang: lang });
      Markdown.renderPlain(item.preview, content);
      body.append(el("div", { class: "msg msg-preview" }, [content]));
    }
    const actions = el("div", { class: "item-actions" }, [
      el("button", { type: "button", class: "ghost small-button find-similar", "data-item": id, text: gettext("Find similar") }),
    ]);
    if (options && options.duplicateOf) {
      const of = options.duplicateOf;
      actions.append(el("span", { class: "muted small", text: interpolate(gettext("near-duplicate of %s"), [String(of.external_id || "#" + of.id)]) }));
    }
    if (Number.isInteger(id)) actions.append(el("a", { class: "small", href: config.urls.review + "?item=" + id, text: gettext("Open") }));
    return el("li", { class: "item-card", tabindex: "0", "data-item": id }, [head, body, actions]);
  }

  // ---------------------------------------------------------------------------------------
  // The item browser: a cluster's items, search results or similar items.

  const browser = { mode: null, cluster: null, next: null, title: "" };

  function setBrowser(mode, title, cluster) {
    browser.mode = mode;
    browser.cluster = cluster || null;
    $("browser-title").textContent = title;
    $("browser-hint").hidden = true;
    $("items").replaceChildren();
    $("more").hidden = true;
    $("bulk").hidden = !config.is_admin;
    const clusterScope = $("scope-cluster");
    clusterScope.disabled = !cluster;
    $("scope-cluster-label").hidden = !cluster;
    (cluster ? clusterScope : $("scope-selection")).checked = true;
    updateSelectionCount();
  }

  async function loadInto(url, append) {
    $("items").setAttribute("aria-busy", "true");
    const result = await request("GET", url);
    $("items").removeAttribute("aria-busy");
    if (result.status !== 200) {
      status.show(errorText(result), "error");
      return [];
    }
    const { rows, next } = rowsOf(result.data);
    if (!append) $("items").replaceChildren();
    for (const row of rows) $("items").append(itemCard(row));
    browser.next = next;
    $("more").hidden = !next;
    if (!append && !rows.length) $("items").append(el("li", { class: "empty", text: emptyText() }));
    return rows;
  }

  function emptyText() {
    if (browser.mode === "similar") return gettext("No similar items: this item has no embedding yet.");
    if (browser.mode === "search") return gettext("Nothing matches.");
    return gettext("This cluster has no items left.");
  }

  function clusterName(id) {
    const button = document.querySelector('.open-cluster[data-cluster="' + Number(id) + '"]');
    return button ? button.textContent.trim() : "#" + id;
  }

  function openCluster(id) {
    id = Number(id);
    if (!Number.isInteger(id)) return;
    for (const row of document.querySelectorAll(".cluster-row")) row.classList.toggle("current", Number(row.dataset.cluster) === id);
    setBrowser("cluster", interpolate(gettext("Cluster: %s"), [clusterName(id)]), id);
    loadInto(api("clusters/" + id + "/items/"), false);
  }

  function findSimilar(id) {
    id = Number(id);
    if (!Number.isInteger(id)) return;
    setBrowser("similar", interpolate(gettext("Similar to item #%s"), [String(id)]), null);
    loadInto(api("items/" + id + "/similar/"), false);
  }

  function search(text) {
    text = text.trim();
    if (!text) return;
    setBrowser("search", interpolate(gettext("Search: %s"), [text]), null);
    loadInto(config.urls.search + "?q=" + encodeURIComponent(text), false);
  }

  for (const button of document.querySelectorAll(".open-cluster")) {
    button.addEventListener("click", () => openCluster(button.dataset.cluster));
  }
  const map = $("cluster-map");
  if (map) {
    map.addEventListener("click", (event) => {
      const target = event.target.closest("[data-cluster]");
      if (target) openCluster(target.getAttribute("data-cluster"));
    });
  }
  $("more").addEventListener("click", () => browser.next && loadInto(browser.next, true));
  $("items").addEventListener("click", (event) => {
    const button = event.target.closest(".find-similar");
    if (button) findSimilar(button.dataset.item);
  });
  $("items").addEventListener("change", updateSelectionCount);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("search-q").value);
  });

  // ---------------------------------------------------------------------------------------
  // Bulk actions on the open cluster or the checked items.

  function selectedIds(list) {
    return Array.from(list.querySelectorAll("input.pick:checked"), (box) => Number(box.dataset.item)).filter(Number.isInteger);
  }

  function updateSelectionCount() {
    const n = selectedIds($("items")).length;
    $("scope-selection-text").textContent = interpolate(ngettext("the %s selected item", "the %s selected items", n), [numberFormat.format(n)]);
    // Checking items means acting on them; with none checked, the open cluster is the scope.
    if (n) $("scope-selection").checked = true;
    else if (browser.cluster) $("scope-cluster").checked = true;
  }

  const ACTION_DONE = {
    tag: gettext("Tagged %s item(s)."),
    untag: gettext("Untagged %s item(s)."),
    priority_up: gettext("Raised the priority of %s item(s)."),
    priority_down: gettext("Lowered the priority of %s item(s)."),
    queue: gettext("Sent %s item(s) to the queue."),
    exclude: gettext("Excluded %s item(s) from the queue."),
  };

  async function bulk(action, button) {
    const body = { action: action, value: null };
    if (action === "tag" || action === "untag") {
      const tag = $("bulk-tag").value.trim();
      if (!tag) {
        status.show(gettext("Type a tag name first."), "warn");
        $("bulk-tag").focus();
        return;
      }
      body.value = tag;
    } else if (action === "priority_up" || action === "priority_down") {
      body.action = "priority";
      body.value = { add: action === "priority_up" ? PRIORITY_STEP : -PRIORITY_STEP };
    }
    if ($("scope-cluster").checked && browser.cluster) {
      body.selection = { cluster: browser.cluster };
    } else {
      const ids = selectedIds($("items"));
      if (!ids.length) {
        status.show(gettext("Select items first (x), or open a cluster."), "warn");
        return;
      }
      body.selection = { items: ids };
    }
    button.disabled = true;
    const result = await request("POST", api("items/bulk/"), body);
    button.disabled = false;
    if (result.status !== 200 && result.status !== 201) {
      status.show(errorText(result), "error");
      return;
    }
    const n = result.data && typeof result.data.matched === "number" ? result.data.matched : 0;
    status.show(interpolate(ACTION_DONE[action], [numberFormat.format(n)]), "ok");
    if (action === "tag" || action === "untag") loadTags();
  }

  for (const button of document.querySelectorAll("#bulk [data-action]")) {
    button.addEventListener("click", () => bulk(button.dataset.action, button));
  }
  $("bulk-tag").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      bulk("tag", document.querySelector('#bulk [data-action="tag"]'));
    }
  });

  async function loadTags() {
    const result = await request("GET", api("tags/"));
    if (result.status !== 200) return;
    const options = rowsOf(result.data).rows.map((t) => el("option", { value: String(typeof t === "string" ? t : t.name) }));
    $("tag-names").replaceChildren(...options);
  }

  // ---------------------------------------------------------------------------------------
  // Clustering runs: start one, follow it, show the new map when it is done.

  const OPEN = ["queued", "running"];

  // GET clusters/ names the open run (queued or running) as open_run; POST answers the run.
  function runOf(data) {
    if (!data || typeof data !== "object") return null;
    if ("open_run" in data) return data.open_run;
    return data.status ? data : null;
  }

  async function follow() {
    for (let polls = 1; ; polls++) {
      await new Promise((resolve) => window.setTimeout(resolve, POLL_MS));
      const result = await request("GET", api("clusters/"));
      if (result.status !== 200) continue;
      const run = runOf(result.data);
      if (!run || !OPEN.includes(run.status)) {
        window.location.reload();
        return;
      }
      let text = interpolate(gettext("Clustering: %s…"), [String(run.status)]);
      // Queued for half a minute: most likely no background worker is running.
      if (run.status === "queued" && polls * POLL_MS >= 30000) text += " " + gettext("Still waiting for a background worker: is one running?");
      $("run-status").textContent = text;
    }
  }

  const recluster = $("recluster");
  if (recluster) {
    recluster.addEventListener("click", async () => {
      recluster.disabled = true;
      const result = await request("POST", api("clusters/"));
      if (result.status !== 202 && result.status !== 201 && result.status !== 200) {
        recluster.disabled = false;
        status.show(errorText(result), "error");
        return;
      }
      const run = runOf(result.data) || {};
      $("run-status").textContent = interpolate(gettext("Clustering: %s…"), [String(run.status || "queued")]);
      $("run-status").dataset.status = String(run.status || "queued");
      follow();
    });
  }
  if (config.run && OPEN.includes(config.run.status)) follow();

  // ---------------------------------------------------------------------------------------
  // Near-duplicates.

  async function loadDuplicates(url, append) {
    const result = await request("GET", url);
    if (result.status !== 200) {
      status.show(errorText(result), "error");
      return;
    }
    const { rows, next } = rowsOf(result.data);
    const list = $("duplicates");
    if (!append) list.replaceChildren();
    for (const row of rows) {
      // {item: brief, duplicate_of: brief | null, similarity}
      const of = row.duplicate_of && typeof row.duplicate_of === "object" ? row.duplicate_of : null;
      list.append(itemCard(row, of ? { duplicateOf: of } : null));
    }
    $("duplicates-empty").hidden = list.children.length > 0;
    duplicatesNext = next;
    $("dup-more").hidden = !next;
  }

  let duplicatesNext = null;

  function wireDuplicates() {
    $("dup-more").addEventListener("click", () => duplicatesNext && loadDuplicates(duplicatesNext, true));
    $("duplicates").addEventListener("click", (event) => {
      const button = event.target.closest(".find-similar");
      if (button) {
        showTab("clusters", false);
        findSimilar(button.dataset.item);
      }
    });
    $("dup-select-all").addEventListener("click", () => {
      for (const box of $("duplicates").querySelectorAll("input.pick")) box.checked = true;
    });
    $("dup-release").addEventListener("click", async () => {
      const ids = selectedIds($("duplicates"));
      if (!ids.length) {
        status.show(gettext("Select the items to release first."), "warn");
        return;
      }
      const result = await request("POST", api("duplicates/release/"), { items: ids });
      if (result.status !== 200 && result.status !== 201) {
        status.show(errorText(result), "error");
        return;
      }
      const n = result.data && typeof result.data.released === "number" ? result.data.released : ids.length;
      status.show(interpolate(ngettext("Released %s item into the queue.", "Released %s items into the queue.", n), [numberFormat.format(n)]), "ok");
      loadDuplicates(api("duplicates/"), false);
    });
  }
  if ($("duplicates")) wireDuplicates();

  // ---------------------------------------------------------------------------------------
  // Model comparison: a table per question, with each interval drawn as a small SVG bar.

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children || []) node.append(child);
    return node;
  }

  function intervalBar(value, low, high, min, max) {
    const width = 120;
    const x = (v) => Math.max(0, Math.min(width, ((v - min) / (max - min || 1)) * width));
    const label = interpolate(gettext("%s, 95% interval %s to %s"), [String(value), String(low), String(high)]);
    const title = svg("title");
    title.textContent = label;
    return svg("svg", { class: "ci", width: width, height: 12, role: "img", "aria-label": label }, [
      svg("line", { class: "ci-axis", x1: 0, x2: width, y1: 6, y2: 6 }),
      svg("line", { class: "ci-range", x1: x(low), x2: x(high), y1: 6, y2: 6 }),
      svg("circle", { class: "ci-point", cx: x(value), cy: 6, r: 3 }),
      title,
    ]);
  }

  function cell(children, cls) {
    return el("td", { class: cls || null }, children);
  }

  function summaryTable(report) {
    const head = el("tr", {}, [gettext("Version"), gettext("Items"), gettext("Judged"), gettext("Prompts"), gettext("Shared prompts")].map((t) => el("th", { scope: "col", text: t })));
    const body = el("tbody");
    for (const v of report.versions) {
      body.append(el("tr", { "data-version": v.version }, [
        el("th", { scope: "row", text: v.version, dir: "auto" }),
        cell([numberFormat.format(v.items)], "num"),
        cell([numberFormat.format(v.judged)], "num judged"),
        cell([numberFormat.format(v.prompts)], "num"),
        cell([numberFormat.format(v.shared_prompts)], "num shared"),
      ]));
    }
    return el("table", { class: "list compare summary", id: "compare-summary" }, [el("thead", {}, [head]), body]);
  }

  function questionTable(report, q) {
    const head = el("tr", {}, [el("th", { scope: "col", text: gettext("Version") }), el("th", { scope: "col", text: "n" })]);
    if (q.type === "rating") head.append(el("th", { scope: "col", text: gettext("Mean (95% CI)") }), el("th", { scope: "col" }));
    else for (const o of q.options) head.append(el("th", { scope: "col", text: o.label }));
    const body = el("tbody");
    for (const v of report.versions) {
      const r = v.results[q.key] || {};
      const tr = el("tr", { "data-version": v.version, "data-question": q.key }, [el("th", { scope: "row", text: v.version, dir: "auto" }), cell([numberFormat.format(r.n || 0)], "num")]);
      if (q.type === "rating") {
        if (r.mean === null || r.mean === undefined) tr.append(cell(["—"], "muted"), cell([]));
        else {
          tr.append(cell([r.mean.toFixed(2) + " (" + r.low.toFixed(2) + "–" + r.high.toFixed(2) + ")"], "num mean"));
          tr.append(cell([intervalBar(r.mean, r.low, r.high, 1, q.scale || 5)]));
        }
      } else {
        for (const o of r.options || []) {
          if (o.share === null) tr.append(cell(["—"], "muted"));
          else tr.append(cell([el("span", { class: "share", "data-option": o.value, text: percent(o.share) }), el("span", { class: "muted small", text: " (" + percent(o.low) + "–" + percent(o.high) + ")" }), intervalBar(o.share, o.low, o.high, 0, 1)], "num"));
        }
      }
      body.append(tr);
    }
    return el("section", { class: "compare-question" }, [
      el("h3", { text: q.title || q.key, dir: "auto" }),
      el("table", { class: "list compare", "data-question": q.key }, [el("thead", {}, [head]), body]),
    ]);
  }

  function fillPairForm(report) {
    const a = $("pairs-a");
    const b = $("pairs-b");
    if (!a || !b) return;
    const names = report.versions.map((v) => v.version);
    a.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    b.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
    const best = report.pairs[0];
    if (best) {
      a.value = best.a;
      b.value = best.b;
    }
    $("pairs-card").hidden = names.length < 2;
  }

  let comparedBy = "model";

  async function loadComparison() {
    const by = $("compare-by").value.trim() || "model";
    const result = await request("GET", config.urls.comparison + "?by=" + encodeURIComponent(by));
    const out = $("compare-result");
    out.replaceChildren();
    if (result.status !== 200) {
      status.show(errorText(result), "error");
      return;
    }
    const report = result.data;
    comparedBy = report.by;
    const empty = $("compare-empty");
    if (!report.versions.length) {
      empty.textContent = interpolate(gettext("No item has “%s” in its metadata. Import items with e.g. metadata.model to compare versions."), [report.by]);
      empty.hidden = false;
      fillPairForm(report);
      return;
    }
    empty.hidden = true;
    out.append(summaryTable(report));
    if (report.versions.length < 2) out.append(el("p", { class: "muted", text: gettext("Only one version so far: nothing to compare it with.") }));
    if (!report.versions.some((v) => v.judged)) out.append(el("p", { class: "muted", id: "compare-unjudged", text: gettext("No item has a consensus answer yet: the shares and means appear once raters have judged items.") }));
    // Questions nobody has answered yet are named in one line, not drawn as empty tables.
    const unanswered = [];
    for (const q of report.questions) {
      if (report.versions.some((v) => (v.results[q.key] || {}).n)) out.append(questionTable(report, q));
      else unanswered.push(q.title || q.key);
    }
    if (unanswered.length && unanswered.length < report.questions.length) {
      out.append(el("p", { class: "muted small", id: "compare-unanswered", text: interpolate(gettext("No consensus yet for: %s."), [unanswered.join(" · ")]) }));
    }
    fillPairForm(report);
  }

  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadComparison();
  });

  const pairsForm = $("pairs-form");
  if (pairsForm) {
    pairsForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { by: comparedBy, a: $("pairs-a").value, b: $("pairs-b").value };
      const target = $("pairs-target").value.trim();
      if (target) body.target_project = target;
      const submit = pairsForm.querySelector("button[type=submit]");
      submit.disabled = true;
      const result = await request("POST", config.urls.pairs, body);
      submit.disabled = false;
      if (result.status !== 201) {
        $("pairs-result").textContent = errorText(result);
        return;
      }
      const d = result.data;
      $("pairs-result").textContent = interpolate(
        gettext("%(created)s pair item(s) created in %(project)s, %(existing)s already there, %(skipped)s prompt(s) skipped because the conversations differ."),
        { created: d.created, project: d.target_project, existing: d.skipped_existing, skipped: d.skipped_different_context },
        true,
      );
    });
  }

  // ---------------------------------------------------------------------------------------
  // Keyboard.

  function cards() {
    const panel = document.querySelector(".tab-panel:not([hidden])");
    return panel ? Array.from(panel.querySelectorAll(".item-card")) : [];
  }

  function currentCard() {
    return document.activeElement && document.activeElement.closest ? document.activeElement.closest(".item-card") : null;
  }

  function toggleHelp(show) {
    $("help").hidden = !show;
    if (show) $("help-close").focus();
  }
  $("help-open").addEventListener("click", () => toggleHelp(true));
  $("help-close").addEventListener("click", () => toggleHelp(false));

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      if (!$("help").hidden) toggleHelp(false);
      else if (isTyping(event.target)) event.target.blur();
      return;
    }
    if (isTyping(event.target) || !$("help").hidden && event.key !== "?") return;
    const list = cards();
    const card = currentCard();
    switch (event.key) {
      case "?":
        toggleHelp($("help").hidden);
        break;
      case "/":
        showTab("clusters", false);
        $("search-q").focus();
        break;
      case "1":
      case "2":
      case "3":
        if (!TABS[Number(event.key) - 1]) return;
        showTab(TABS[Number(event.key) - 1], true);
        break;
      case "j":
      case "k": {
        if (!list.length) return;
        const at = list.indexOf(card);
        const next = event.key === "j" ? Math.min(list.length - 1, at + 1) : Math.max(0, at < 0 ? 0 : at - 1);
        list[next].focus();
        break;
      }
      case "x":
        if (!card) return;
        card.querySelector("input.pick").click();
        break;
      case "f":
        if (!card) return;
        showTab("clusters", false);
        findSimilar(card.dataset.item);
        break;
      case "t":
        if ($("bulk").hidden) return;
        $("bulk-tag").focus();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  loadTags();
})();
