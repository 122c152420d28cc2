/* Shared by the labelling and review pages: safe DOM building and a Markdown subset renderer.
 *
 * Every piece of item or schema text is untrusted: the DOM is built with createElement and
 * textContent only, never innerHTML. Markdown is rendered by a small parser that keeps, on the
 * element around each rendered text node, the code-point offset of that text in the raw content
 * (data-start), so a selection maps back to exact offsets for span answers.
 */
window.annotatorConversation = (function () {
  "use strict";

  // ---------------------------------------------------------------------------------------
  // DOM helpers: text goes in as text, attributes through setAttribute, never a handler.

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [name, value] of Object.entries(props)) {
        if (value === undefined || value === null || value === false) continue;
        if (name === "text") node.textContent = value;
        else if (name === "class") node.className = value;
        else if (name === "hidden") node.hidden = Boolean(value);
        else {
          if (/^on/i.test(name)) throw new Error("refusing to set an event handler attribute");
          node.setAttribute(name, value === true ? "" : String(value));
        }
      }
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function kbd(key) {
    return el("kbd", { text: key === " " ? "Space" : key });
  }

  // ---------------------------------------------------------------------------------------
  // Markdown subset with offsets.

  const Markdown = (() => {
    const PUNCT = /[!-/:-@[-`{-~]/;
    const SPACE = /\s/;
    const ALNUM = /[\p{L}\p{N}]/u;

    // cp[i]: code points in raw.slice(0, i), for every UTF-16 index i (Python's str offsets).
    function codePointMap(raw) {
      const cp = new Uint32Array(raw.length + 1);
      let count = 0;
      for (let i = 0; i < raw.length; i++) {
        cp[i] = count;
        const c = raw.charCodeAt(i);
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < raw.length) {
          const d = raw.charCodeAt(i + 1);
          if (d >= 0xdc00 && d <= 0xdfff) {
            cp[i + 1] = count;
            i++;
          }
        }
        count++;
      }
      cp[raw.length] = count;
      return cp;
    }

    // inverse[k]: the UTF-16 index where code point k starts.
    function inverseMap(cp, length) {
      const inverse = new Uint32Array(cp[length] + 1);
      for (let i = length; i >= 0; i--) inverse[cp[i]] = i;
      return inverse;
    }

    function safeUrl(url) {
      try {
        const parsed = new URL(url);
        return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
      } catch (_) {
        return null;
      }
    }

    class Renderer {
      constructor(raw, cp) {
        this.raw = raw;
        this.cp = cp || codePointMap(raw);
      }

      seg(a, b) {
        if (b <= a) return null;
        return el("span", {
          class: "seg",
          "data-start": this.cp[a],
          "data-u": a,
          text: this.raw.slice(a, b),
        });
      }

      lines() {
        const raw = this.raw;
        const lines = [];
        let i = 0;
        for (;;) {
          let j = raw.indexOf("\n", i);
          if (j < 0) j = raw.length;
          let e = j;
          if (e > i && raw.charCodeAt(e - 1) === 13) e--;
          lines.push({ s: i, e: e, text: raw.slice(i, e) });
          if (j >= raw.length) break;
          i = j + 1;
        }
        return lines;
      }

      blocks(root) {
        const lines = this.lines();
        let para = null;
        let list = null;
        let quote = null;
        const close = () => {
          para = null;
          list = null;
          quote = null;
        };
        for (let n = 0; n < lines.length; n++) {
          const line = lines[n];
          const text = line.text;
          if (/^\s*$/.test(text)) {
            close();
            continue;
          }
          let m = /^( {0,3})(`{3,}|~{3,})/.exec(text);
          if (m && !(m[2][0] === "`" && text.slice(m[0].length).includes("`"))) {
            close();
            const fence = m[2];
            let k = n + 1;
            while (k < lines.length) {
              const c = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[k].text);
              if (c && c[1][0] === fence[0] && c[1].length >= fence.length) break;
              k++;
            }
            const code = el("code");
            if (k > n + 1) code.append(this.seg(lines[n + 1].s, lines[k - 1].e) || "");
            const info = text.slice(m[0].length).trim();
            const pre = el("pre", { dir: "ltr" }, [code]);
            if (info) pre.setAttribute("data-lang", info.split(/\s/)[0].slice(0, 30));
            root.append(pre);
            n = k;
            continue;
          }
          m = /^ {0,3}(#{1,6})(?:[ \t]+|$)/.exec(text);
          if (m) {
            close();
            const from = line.s + m[0].length;
            let end = line.e;
            while (end > from && /[ \t]/.test(this.raw[end - 1])) end--;
            // An optional closing run of #s, when a space separates it from the text.
            let hashes = end;
            while (hashes > from && this.raw[hashes - 1] === "#") hashes--;
            if (hashes < end && (hashes === from || /[ \t]/.test(this.raw[hashes - 1]))) {
              end = hashes;
              while (end > from && /[ \t]/.test(this.raw[end - 1])) end--;
            }
            const level = Math.min(6, m[1].length + 2);
            const h = el("h" + level, { class: "md-h", dir: "auto" });
            this.inline(line.s + m[0].length, end, h);
            root.append(h);
            continue;
          }
          if (/^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/.test(text)) {
            close();
            root.append(el("hr"));
            continue;
          }
          m = /^ {0,3}>[ \t]?/.exec(text);
          if (m) {
            if (!quote) {
              close();
              quote = el("blockquote", { dir: "auto" });
              root.append(quote);
            } else {
              quote.append(el("br"));
            }
            this.inline(line.s + m[0].length, line.e, quote);
            continue;
          }
          m = /^([ \t]*)([-*+]|(\d{1,9})[.)])[ \t]+/.exec(text);
          if (m) {
            const ordered = m[3] !== undefined;
            if (!list || list.ordered !== ordered) {
              close();
              const listEl = el(ordered ? "ol" : "ul", { dir: "auto" });
              if (ordered && m[3] !== "1") listEl.setAttribute("start", String(parseInt(m[3], 10)));
              root.append(listEl);
              list = { el: listEl, ordered: ordered, last: null };
            }
            const indent = Math.min(3, Math.floor(m[1].replace(/\t/g, "  ").length / 2));
            const li = el("li", { class: indent ? "ind-" + indent : null });
            this.inline(line.s + m[0].length, line.e, li);
            list.el.append(li);
            list.last = li;
            continue;
          }
          const lead = /^[ \t]*/.exec(text)[0].length;
          if (list && lead > 0 && list.last) {
            list.last.append(el("br"));
            this.inline(line.s + lead, line.e, list.last);
            continue;
          }
          if (quote || list) close();
          if (!para) {
            para = el("p", { dir: "auto" });
            root.append(para);
          } else {
            para.append(el("br"));
          }
          this.inline(line.s + lead, line.e, para);
        }
      }

      findDouble(from, end, mark) {
        let j = from;
        while ((j = this.raw.indexOf(mark, j)) >= 0 && j + 2 <= end) {
          if (!SPACE.test(this.raw[j - 1])) return j;
          j += 1;
        }
        return -1;
      }

      findSingle(from, end, c) {
        const raw = this.raw;
        let j = from;
        while ((j = raw.indexOf(c, j)) >= 0 && j < end) {
          if (raw[j + 1] === c) {
            j += 2;
            continue;
          }
          if (SPACE.test(raw[j - 1]) || j === from) {
            j += 1;
            continue;
          }
          if (c === "_" && j + 1 < end && ALNUM.test(raw[j + 1])) {
            j += 1;
            continue;
          }
          return j;
        }
        return -1;
      }

      inline(a, b, parent) {
        const raw = this.raw;
        let i = a;
        let t = a;
        const flush = (end) => {
          const s = this.seg(t, end);
          if (s) parent.append(s);
        };
        while (i < b) {
          const c = raw[i];
          if (c === "\\" && i + 1 < b && PUNCT.test(raw[i + 1])) {
            flush(i);
            t = i + 1;
            i += 2;
            continue;
          }
          if (c === "`") {
            let n = 1;
            while (i + n < b && raw[i + n] === "`") n++;
            const fence = "`".repeat(n);
            let j = raw.indexOf(fence, i + n);
            while (j >= 0 && j + n <= b && raw[j + n] === "`") {
              let k = j;
              while (raw[k] === "`") k++;
              j = raw.indexOf(fence, k);
            }
            if (j >= 0 && j + n <= b) {
              flush(i);
              const code = el("code", { dir: "ltr" });
              const s = this.seg(i + n, j);
              if (s) code.append(s);
              parent.append(code);
              i = j + n;
              t = i;
            } else {
              i += n;
            }
            continue;
          }
          if (c === "*" || c === "_") {
            const prevAlnum = i > a && ALNUM.test(raw[i - 1]);
            if (raw[i + 1] === c && i + 2 < b && !SPACE.test(raw[i + 2]) && !(c === "_" && prevAlnum)) {
              const j = this.findDouble(i + 2, b, c + c);
              if (j > i + 2) {
                flush(i);
                const strong = el("strong");
                this.inline(i + 2, j, strong);
                parent.append(strong);
                i = j + 2;
                t = i;
                continue;
              }
            } else if (raw[i + 1] !== c && i + 1 < b && !SPACE.test(raw[i + 1]) && !(c === "_" && prevAlnum)) {
              const j = this.findSingle(i + 1, b, c);
              if (j > i + 1) {
                flush(i);
                const em = el("em");
                this.inline(i + 1, j, em);
                parent.append(em);
                i = j + 1;
                t = i;
                continue;
              }
            }
            i += raw[i + 1] === c ? 2 : 1;
            continue;
          }
          if (c === "[") {
            const close = raw.indexOf("]", i + 1);
            if (close > i && close + 1 < b && raw[close + 1] === "(") {
              // The destination ends at the ")" that balances its "(", as in CommonMark.
              let paren = -1;
              for (let k = close + 2, depth = 0; k < b; k++) {
                if (raw[k] === "\\") k++;
                else if (raw[k] === "(") depth++;
                else if (raw[k] === ")" && depth-- === 0) {
                  paren = k;
                  break;
                }
              }
              if (paren > 0) {
                flush(i);
                const label = el("span", { class: "md-link" });
                this.inline(i + 1, close, label);
                parent.append(label);
                // The URL is shown (and clickable) only when it is plain http(s).
                let us = close + 2;
                while (us < paren && SPACE.test(raw[us])) us++;
                let ue = us;
                while (ue < paren && !SPACE.test(raw[ue])) ue++;
                const href = safeUrl(raw.slice(us, ue));
                if (href) {
                  const a = el("a", { href: href, rel: "noopener noreferrer nofollow", target: "_blank" });
                  a.append(this.seg(us, ue));
                  parent.append(el("span", { class: "md-url" }, [el("span", { class: "deco", text: " (" }), a, el("span", { class: "deco", text: ")" })]));
                }
                i = paren + 1;
                t = i;
                continue;
              }
            }
          }
          i++;
        }
        flush(b);
      }
    }

    function render(raw, root) {
      const r = new Renderer(raw);
      r.blocks(root);
      return r.cp;
    }

    function renderPlain(raw, root) {
      const r = new Renderer(raw);
      const s = r.seg(0, raw.length);
      const block = el("div", { class: "plain", dir: "auto" });
      if (s) block.append(s);
      root.append(block);
      return r.cp;
    }

    return { render, renderPlain, codePointMap, inverseMap };
  })();

  /** Whether a key press belongs to a text field rather than to the page's hotkeys. */
  function isTyping(target) {
    if (!target || !target.tagName) return false;
    if (target.isContentEditable) return true;
    if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
    return target.tagName === "INPUT" && !["button", "submit", "checkbox", "radio", "reset"].includes(target.type);
  }

  /** Options without a hotkey of their own answer to their position (1-9) while active. */
  function optionKeys(options) {
    const taken = new Set(options.filter((o) => o.hotkey).map((o) => o.hotkey.toLowerCase()));
    let digit = 1;
    return options.map((o) => {
      if (o.hotkey) return o.hotkey;
      while (digit <= 9 && taken.has(String(digit))) digit++;
      if (digit > 9) return null;
      taken.add(String(digit));
      return String(digit++);
    });
  }

  // ---------------------------------------------------------------------------------------
  // Translations (Django's JavaScript catalogue, when loaded) and the pages' status line.

  const gettext = window.gettext || ((s) => s);
  const ngettext = window.ngettext || ((s, p, n) => (n === 1 ? s : p));
  const interpolate =
    window.interpolate ||
    ((fmt, obj, named) =>
      named
        ? fmt.replace(/%\(\w+\)s/g, (m) => String(obj[m.slice(2, -2)]))
        : fmt.replace(/%s/g, () => String(obj.shift())));

  /** The page's #status line: a message that hides itself after `ms` unless sticky. */
  function statusLine(ms) {
    return {
      timer: null,
      show(text, kind, sticky) {
        const node = document.getElementById("status");
        node.textContent = text;
        node.className = "status " + (kind || "info");
        node.hidden = false;
        window.clearTimeout(this.timer);
        if (!sticky) this.timer = window.setTimeout(() => this.clear(), ms);
      },
      clear() {
        window.clearTimeout(this.timer);
        const node = document.getElementById("status");
        node.hidden = true;
        node.textContent = "";
      },
    };
  }

  return { el, kbd, Markdown, isTyping, optionKeys, gettext, ngettext, interpolate, statusLine };
})();
