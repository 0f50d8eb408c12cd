// The pykvs web UI: plain JS, no build step, no third-party code. It speaks only the agent's
// public HTTP API (/v1/kv, /v1/status, /v1/operator/raft, /v1/agent/self, /v1/session/info),
// so everything it shows a user's own client can read too.
//
// Views (location.hash):  #/kv/<folder>/  folder view   #/kv/<key>  key view
//                         #/create/<folder>/  new key   #/cluster   cluster panel
// The open folder and key stay current through blocking queries (?index=&wait=), not polling.
"use strict";

(() => {
  const WAIT = "60s"; // how long one blocking query may wait on the server
  const RETRY_MAX_MS = 15000; // back-off ceiling after a failed read
  const MAX_ROWS = 1000; // a folder longer than this shows its first rows and says so
  const CLUSTER_REFRESH_MS = 3000; // the Raft configuration does not block: re-read it
  const TOKEN_KEY = "pykvs.token"; // sessionStorage: forgotten when the tab closes
  const MAX_UINT64 = 18446744073709551615n;

  // ------------------------------------------------------------------------------ the DOM
  const $ = (id) => document.getElementById(id);

  /** An element: h("a", {href: "#"}, "text", child, ...). Text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function showError(message, owner) {
    $("error-text").textContent = message;
    $("error").hidden = false;
    $("error").dataset.owner = owner || "";
  }

  /** Hide the error banner, or only when ``owner`` (a watch loop) is the one that set it. */
  function clearError(owner) {
    if (owner !== undefined && $("error").dataset.owner !== owner) return;
    $("error").hidden = true;
    $("error").dataset.owner = "";
  }

  let pendingNotice = "";

  function showNotice(message) {
    $("notice").textContent = message;
    $("notice").hidden = !message;
  }

  // ------------------------------------------------------------------------------ the API
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.name = "ApiError";
      this.status = status;
    }
  }

  /** A key as a URL path: each segment percent-encoded, the slashes kept. */
  const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");
  const kvUrl = (key) => `/v1/kv/${keyPath(key)}`;

  /** What a failed call means, in words: ``what`` names the action ("Saving key a/b"). */
  function describeFailure(what, status, statusText, body) {
    const reason = body.trim() || statusText || "no reason given";
    if (status === 403) {
      return `${what} was refused: permission denied (403: ${reason}). ` +
        "Enter a token that grants it in the \"ACL token\" field.";
    }
    if (/no cluster leader/i.test(reason)) {
      return `${what} failed: the cluster has no leader right now (${status}: ${reason}). ` +
        "A majority of the servers must be up; the page retries on its own.";
    }
    return `${what} failed (${status} ${statusText}): ${reason}`;
  }

  /**
   * Call the HTTP API. Resolves to {status, data, index, knownLeader, lastContact}; ``data`` is
   * parsed JSON (text for other bodies, null for a 404 when ``notFoundOk``). Any other
   * failure rejects with an ApiError whose message is fit to show as it is.
   */
  async function api(method, path, options = {}) {
    const { query, body, signal, notFoundOk, what = `${method} ${path}` } = options;
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value === undefined || value === null || value === false) continue;
      url.searchParams.append(name, value === true ? "" : String(value));
    }
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["X-Consul-Token"] = token;
    let response;
    try {
      response = await fetch(url, { method, headers, body, signal, cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`${what} failed: cannot reach the pykvs agent at ${location.host} ` +
        `(${err.message}). Is it running?`, 0);
    }
    const text = await response.text();
    const result = {
      status: response.status,
      index: Number(response.headers.get("X-Consul-Index") || 0),
      knownLeader: response.headers.get("X-Consul-KnownLeader"),
      lastContact: response.headers.get("X-Consul-LastContact"),
      data: null,
    };
    if (response.ok) {
      const isJson = (response.headers.get("Content-Type") || "").includes("json");
      try {
        result.data = isJson && text ? JSON.parse(text) : text;
      } catch (err) {
        throw new ApiError(`${what} failed: the agent sent JSON the page cannot read ` +
          `(${err.message})`, response.status);
      }
      noteLeader(result.knownLeader);
      return result;
    }
    if (response.status === 404 && notFoundOk) {
      noteLeader(result.knownLeader);
      return result;
    }
    throw new ApiError(describeFailure(what, response.status, response.statusText, text),
      response.status);
  }

  const sleep = (ms, signal) => new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });

  /**
   * Keep ``onResult`` fed with the current answer to a read: the first read returns at once,
   * each later one is a blocking query that returns when the index passes the last one seen
   * (or the wait ends). Stops when ``signal`` aborts; failures are shown and retried with
   * back-off, and the banner goes once a read succeeds again.
   */
  async function watch(path, query, onResult, signal, what) {
    const owner = `watch:${path}`;
    let index = 0;
    let failures = 0;
    while (!signal.aborted) {
      const started = Date.now();
      try {
        const blocking = index > 0 ? { index, wait: WAIT } : {};
        const result = await api("GET", path,
          { query: { ...query, ...blocking }, signal, notFoundOk: true, what });
        if (signal.aborted) return;
        const unchanged = result.index === index;
        // An index that went backwards (a restored snapshot, another leader) starts over.
        index = result.index < index ? 0 : result.index;
        failures = 0;
        clearError(owner);
        onResult(result);
        // A server that answers at once without a newer index would make this a busy loop.
        if (unchanged && Date.now() - started < 1000) await sleep(1000, signal);
      } catch (err) {
        if (signal.aborted || err.name === "AbortError") return;
        failures += 1;
        showError(`${err.message} (retrying)`, owner);
        await sleep(Math.min(RETRY_MAX_MS, 500 * 2 ** failures), signal);
      }
    }
  }

  // ------------------------------------------------------------------------- the header bar
  const agentInfo = { datacenter: "", node: "", leader: "" };

  function renderStatus(knownLeader) {
    const parts = [];
    if (agentInfo.datacenter) parts.push(agentInfo.datacenter);
    if (agentInfo.node) parts.push(`agent ${agentInfo.node}`);
    if (knownLeader === "false") parts.push("no known leader");
    else if (agentInfo.leader) parts.push(`leader ${agentInfo.leader}`);
    $("status").textContent = parts.join(" · ") || "connecting…";
    $("status").classList.toggle("bad", knownLeader === "false");
  }

  let lastKnownLeader = null;

  function noteLeader(knownLeader) {
    if (knownLeader === null || knownLeader === lastKnownLeader) return;
    lastKnownLeader = knownLeader;
    renderStatus(knownLeader);
  }

  async function loadAgentInfo() {
    try {
      const self = await api("GET", "/v1/agent/self", { what: "Reading the agent's details" });
      agentInfo.datacenter = self.data.Config.Datacenter;
      agentInfo.node = self.data.Config.NodeName;
      const leader = await api("GET", "/v1/status/leader", { what: "Finding the leader" });
      agentInfo.leader = leader.data;
      renderStatus(lastKnownLeader);
    } catch (err) {
      showError(err.message);
    }
  }

  function setupToken() {
    const input = $("token");
    input.value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
      pendingNotice = token ? "Token set: requests now carry it as X-Consul-Token."
        : "Token cleared: requests are anonymous.";
      route(); // read the open view again with the new token
    });
  }

  // ------------------------------------------------------------------------------ values
  function base64ToBytes(text) {
    const binary = atob(text || "");
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  const hexOf = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");

  function hexDump(bytes) {
    const lines = [];
    for (let offset = 0; offset < bytes.length; offset += 16) {
      const row = bytes.subarray(offset, offset + 16);
      const ascii = Array.from(row, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "."));
      lines.push(`${offset.toString(16).padStart(8, "0")}  ${hexOf(row).padEnd(47)}  ` +
        `|${ascii.join("")}|`);
    }
    return lines.join("\n");
  }

  /** How to show a value: {kind: "empty"|"json"|"text"|"binary", shown, editText, editMode}. */
  function describeValue(bytes) {
    if (bytes.length === 0) return { kind: "empty", shown: "", editText: "", editMode: "text" };
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      text = null;
    }
    // Control characters other than tab and line breaks mean bytes, not text.
    if (text === null || /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) {
      return { kind: "binary", shown: hexDump(bytes), editText: hexOf(bytes), editMode: "hex" };
    }
    const trimmed = text.trim();
    if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
      try {
        const shown = JSON.stringify(JSON.parse(trimmed), null, 2);
        return { kind: "json", shown, editText: text, editMode: "text" };
      } catch {
        // not JSON after all: shown as text
      }
    }
    return { kind: "text", shown: text, editText: text, editMode: "text" };
  }

  const KIND_LABEL = { empty: "empty", json: "JSON", text: "text", binary: "binary (hex)" };

  /** The bytes an editor holds, or throws an Error saying what is wrong with them. */
  function editorBytes(text, mode) {
    if (mode === "text") return new TextEncoder().encode(text);
    const digits = text.replace(/\s+/g, "");
    if (!/^([0-9a-fA-F]{2})*$/.test(digits)) {
      throw new Error("The value is not valid hex: use pairs of the digits 0-9 and a-f, " +
        "spaces allowed (for example \"de ad be ef\").");
    }
    return Uint8Array.from(digits.match(/../g) || [], (pair) => parseInt(pair, 16));
  }

  function parseFlags(text) {
    const trimmed = text.trim() || "0";
    if (!/^[0-9]+$/.test(trimmed) || BigInt(trimmed) > MAX_UINT64) {
      throw new Error(`Flags must be a whole number from 0 to ${MAX_UINT64}, not "${text}".`);
    }
    return trimmed;
  }

  // ------------------------------------------------------------------------- shared pieces
  const parentFolder = (key) => key.slice(0, key.replace(/\/$/, "").lastIndexOf("/") + 1);
  const kvHref = (key) => `#/kv/${keyPath(key)}`;
  const segmentLabel = (segment) => segment || "(empty)";
  const plural = (count, noun) => `${count} ${noun}${count === 1 ? "" : "s"}`;

  function breadcrumbs(key) {
    const nav = h("nav", { class: "crumbs", "aria-label": "Breadcrumbs" },
      h("a", { href: "#/kv/" }, "Key/Value"));
    const segments = key === "" ? [] : key.split("/");
    const isFolder = key.endsWith("/");
    if (isFolder) segments.pop();
    let path = "";
    segments.forEach((segment, i) => {
      const last = i === segments.length - 1;
      path += segment + (last && !isFolder ? "" : "/");
      nav.append(h("span", { class: "sep" }, "/"));
      nav.append(last ? h("span", { class: "here" }, segmentLabel(segment))
        : h("a", { href: kvHref(path) }, segmentLabel(segment)));
    });
    return nav;
  }

  /** Ask before deleting; resolves true on "Delete". */
  function confirmDelete(message) {
    const dialog = $("confirm");
    $("confirm-text").textContent = message;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  /** Run ``action`` (an async function) with ``button`` disabled; show a failure. */
  async function busy(button, action) {
    button.disabled = true;
    try {
      await action();
    } catch (err) {
      if (err.name !== "AbortError") showError(err.message);
    } finally {
      button.disabled = false;
    }
  }

  /** The inputs of a value editor: {text, mode ("text" or "hex"), flags}. */
  function valueFields(initialText, initialMode, initialFlags) {
    const text = h("textarea", { id: "value-input", rows: 12, spellcheck: "false",
      "aria-label": "Value" }, initialText);
    const mode = h("select", { id: "value-mode", "aria-label": "Value encoding" },
      h("option", { value: "text", selected: initialMode === "text" }, "text (UTF-8)"),
      h("option", { value: "hex", selected: initialMode === "hex" }, "hex bytes"));
    const flags = h("input", { id: "flags-input", value: initialFlags, inputmode: "numeric",
      "aria-label": "Flags" });
    return { text, mode, flags };
  }

  // ---------------------------------------------------------------------------- folder view
  function folderView(folder, signal) {
    const list = h("ul", { id: "folder-list", class: "listing" });
    const footer = h("p", { id: "folder-footer", class: "muted" }, "loading…");
    const search = h("input", {
      id: "search", type: "search", placeholder: "Filter by key prefix",
      "aria-label": "Filter by key prefix", spellcheck: "false",
      value: new URLSearchParams(location.hash.split("?")[1] || "").get("prefix") || "",
    });
    const deleteFolder = folder && h("button", { id: "delete-folder", class: "danger" },
      "Delete folder");
    const view = h("section", { class: "folder" },
      breadcrumbs(folder),
      h("div", { class: "toolbar" },
        search,
        h("a", { id: "create-button", class: "button", href: `#/create/${keyPath(folder)}` },
          "Create"),
        deleteFolder),
      list, footer);

    function renderKeys(keys, index) {
      const entries = (keys || []).filter((key) => key !== folder);
      list.replaceChildren(...entries.slice(0, MAX_ROWS).map((key) => {
        const name = key.slice(folder.length);
        const isFolder = key.endsWith("/");
        return h("li", { class: isFolder ? "folder-row" : "key-row", dataset: { key } },
          h("a", { href: kvHref(key) }, name),
          isFolder && h("button", {
            class: "danger small", title: `Delete folder ${key}`,
            onclick: (event) => busy(event.currentTarget, () => removeFolder(key)),
          }, "Delete"));
      }));
      if (entries.length === 0) {
        list.append(h("li", { class: "empty" }, search.value
          ? `No keys under ${folder}${search.value}`
          : folder ? "This folder is empty." : "No keys yet: use Create to add one."));
      }
      if (entries.length > MAX_ROWS) {
        list.append(h("li", { class: "empty" }, `Showing the first ${MAX_ROWS} of ` +
          `${entries.length}: type a prefix in the filter to narrow the list.`));
      }
      const folders = entries.filter((key) => key.endsWith("/")).length;
      footer.textContent = `${plural(entries.length - folders, "key")}, ` +
        `${plural(folders, "folder")} · index ${index} · live`;
    }

    // The listing is re-read when the filter changes: a new watch on the new prefix.
    let watchAbort = null;
    function watchPrefix() {
      if (watchAbort) watchAbort.abort();
      watchAbort = new AbortController();
      signal.addEventListener("abort", () => watchAbort.abort(), { once: true });
      const prefix = folder + search.value;
      watch(kvUrl(prefix), { keys: true, separator: "/" },
        (result) => renderKeys(result.data, result.index), watchAbort.signal,
        `Listing ${prefix || "the root folder"}`);
    }
    let debounce = null;
    search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        const query = search.value ? `?prefix=${encodeURIComponent(search.value)}` : "";
        history.replaceState(null, "", `#/kv/${keyPath(folder)}${query}`);
        watchPrefix();
      }, 200);
    });
    if (deleteFolder) {
      deleteFolder.addEventListener("click", () => busy(deleteFolder, () => removeFolder(folder)));
    }
    watchPrefix();
    return view;
  }

  async function removeFolder(folder) {
    const all = await api("GET", kvUrl(folder),
      { query: { keys: true }, notFoundOk: true, what: `Counting the keys under ${folder}` });
    const count = (all.data || []).length;
    const ok = await confirmDelete(`Delete the folder ${folder} and all ` +
      `${plural(count, "key")} under it? This cannot be undone.`);
    if (!ok) return;
    await api("DELETE", kvUrl(folder),
      { query: { recurse: true }, what: `Deleting folder ${folder}` });
    pendingNotice = `Deleted folder ${folder} (${plural(count, "key")}).`;
    const parent = parentFolder(folder);
    if (location.hash === kvHref(parent)) route();
    else location.hash = kvHref(parent);
  }

  // ---------------------------------------------------------------------------- create view
  function createView(folder) {
    const name = h("input", { id: "key-name", required: true, spellcheck: "false",
      placeholder: "name, or name/ for a folder", "aria-label": "Key name" });
    const { text: value, mode, flags } = valueFields("", "text", 0);
    const save = h("button", { id: "save-button", type: "submit", class: "primary" }, "Save");
    const form = h("form", { class: "editor" },
      h("label", {}, "Key ", h("span", { class: "prefix" }, folder), name),
      h("label", {}, "Value ", mode), value,
      h("label", {}, "Flags ", flags),
      h("div", { class: "buttons" }, save,
        h("a", { class: "button", href: kvHref(folder) }, "Cancel")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(save, async () => {
        const key = folder + name.value;
        const isFolder = key.endsWith("/");
        const body = isFolder ? new Uint8Array() : editorBytes(value.value, mode.value);
        // cas=0: create only, so an existing key is never overwritten from this form.
        const created = await api("PUT", kvUrl(key), {
          query: { cas: 0, flags: parseFlags(flags.value) }, body,
          what: `Creating ${isFolder ? "folder" : "key"} ${key}`,
        });
        if (created.data !== true) {
          throw new Error(`${key} already exists: open it to edit it instead.`);
        }
        pendingNotice = `Created ${isFolder ? "folder" : "key"} ${key}.`;
        location.hash = kvHref(isFolder ? key : parentFolder(key));
      });
    });
    setTimeout(() => name.focus(), 0);
    return h("section", { class: "create" }, breadcrumbs(folder),
      h("h2", {}, `New key in ${folder || "the root folder"}`), form);
  }

  // ------------------------------------------------------------------------------- key view
  const sessionCache = new Map();

  async function sessionSummary(id) {
    if (!sessionCache.has(id)) {
      sessionCache.set(id, api("GET", `/v1/session/info/${encodeURIComponent(id)}`,
        { what: `Reading session ${id}` }).then((r) => {
        const info = (r.data || [])[0];
        if (!info) return `${id} (no longer exists)`;
        const name = info.Name ? `"${info.Name}" ` : "";
        return `${id} — ${name}on node ${info.Node}, behavior ${info.Behavior}` +
          (info.TTL ? `, TTL ${info.TTL}` : "");
      }).catch((err) => `${id} (${err.message})`));
    }
    return sessionCache.get(id);
  }

  function keyView(key, signal) {
    let entry = null; // the entry as last read
    let editBase = null; // the entry an open edit started from (its ModifyIndex is the CAS)
    const meta = h("dl", { id: "key-meta", class: "meta" });
    const kindTag = h("span", { id: "value-kind", class: "tag" });
    const shown = h("pre", { id: "value", class: "value" });
    const missing = h("p", { id: "key-missing", class: "warning", hidden: true });
    const editButton = h("button", { id: "edit-button" }, "Edit");
    const deleteButton = h("button", { id: "delete-button", class: "danger" }, "Delete");
    const actions = h("div", { class: "buttons" }, editButton, deleteButton);
    const editorSlot = h("div", {});

    function renderEntry() {
      const exists = entry !== null;
      missing.hidden = exists;
      actions.hidden = !exists || editBase !== null;
      if (!exists) {
        missing.replaceChildren(`The key ${key} does not exist (it may have been deleted). `,
          h("a", { href: kvHref(parentFolder(key)) }, "Back to the folder"));
        meta.replaceChildren();
        shown.textContent = "";
        kindTag.textContent = "";
        return;
      }
      const bytes = base64ToBytes(entry.Value);
      const value = describeValue(bytes);
      kindTag.textContent = `${KIND_LABEL[value.kind]}, ${bytes.length} bytes`;
      shown.textContent = value.shown;
      shown.dataset.kind = value.kind;
      const session = h("dd", { id: "key-session" }, entry.Session || "none");
      if (entry.Session) {
        sessionSummary(entry.Session).then((text) => { session.textContent = text; });
      }
      meta.replaceChildren(
        h("dt", {}, "Flags"), h("dd", { id: "key-flags" }, entry.Flags),
        h("dt", {}, "CreateIndex"), h("dd", {}, entry.CreateIndex),
        h("dt", {}, "ModifyIndex"), h("dd", { id: "key-modify-index" }, entry.ModifyIndex),
        h("dt", {}, "LockIndex"), h("dd", {}, entry.LockIndex),
        h("dt", {}, "Session"), session);
    }

    function openEditor() {
      editBase = entry;
      const value = describeValue(base64ToBytes(entry.Value));
      const { text, mode, flags } = valueFields(value.editText, value.editMode, entry.Flags);
      const conflict = h("div", { id: "conflict", class: "conflict", role: "alert", hidden: true });
      const save = h("button", { id: "save-button", type: "submit", class: "primary" }, "Save");
      const cancel = h("button", { id: "cancel-button", type: "button" }, "Cancel");
      const form = h("form", { class: "editor" },
        conflict, h("label", {}, "Value ", mode), text, h("label", {}, "Flags ", flags),
        h("div", { class: "buttons" }, save, cancel));
      cancel.addEventListener("click", closeEditor);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        busy(save, async () => {
          const body = editorBytes(text.value, mode.value);
          // CAS on the ModifyIndex the edit started from: a change made meanwhile by anyone
          // else makes the server refuse this write (it answers false).
          const base = editBase ? editBase.ModifyIndex : 0;
          const saved = await api("PUT", kvUrl(key), {
            query: { cas: base, flags: parseFlags(flags.value) }, body,
            what: `Saving ${key}`,
          });
          if (saved.data === true) {
            showNotice(`Saved ${key}.`);
            closeEditor();
            return;
          }
          const now = await api("GET", kvUrl(key),
            { notFoundOk: true, what: `Reading ${key}` });
          const current = now.data ? now.data[0] : null;
          conflict.hidden = false;
          conflict.textContent = current
            ? `Not saved: someone else changed ${key} after you began editing (you edited ` +
              `the version at ModifyIndex ${base}; it is now at ${current.ModifyIndex}). ` +
              "Your text is kept below and the current value is shown above. Save again " +
              "to replace it, or Cancel to keep theirs."
            : `Not saved: someone else deleted ${key} after you began editing. Your text is ` +
              "kept below: Save again to create the key with it, or Cancel.";
          entry = current;
          editBase = current; // a second Save is a deliberate overwrite of what was seen
          renderEntry();
        });
      });
      editorSlot.replaceChildren(form);
      actions.hidden = true;
      text.focus();
    }

    function closeEditor() {
      editBase = null;
      editorSlot.replaceChildren();
      renderEntry();
    }

    editButton.addEventListener("click", openEditor);
    deleteButton.addEventListener("click", () => busy(deleteButton, async () => {
      if (!(await confirmDelete(`Delete the key ${key}? This cannot be undone.`))) return;
      await api("DELETE", kvUrl(key), { what: `Deleting ${key}` });
      pendingNotice = `Deleted key ${key}.`;
      location.hash = kvHref(parentFolder(key));
    }));

    watch(kvUrl(key), {}, (result) => {
      entry = result.data ? result.data[0] : null;
      renderEntry();
      const stale = editBase && (!entry || entry.ModifyIndex !== editBase.ModifyIndex);
      const warning = editorSlot.querySelector("#conflict");
      if (stale && warning && warning.hidden) {
        warning.hidden = false;
        warning.textContent = `${key} was changed by someone else while you were editing ` +
          `(ModifyIndex ${editBase.ModifyIndex} → ${entry ? entry.ModifyIndex : "deleted"}). ` +
          "Saving will be refused so that their change is not lost unseen.";
      }
    }, signal, `Reading ${key}`);

    return h("section", { class: "key" }, breadcrumbs(key),
      h("h2", { id: "key-title" }, key),
      missing, meta,
      h("div", { class: "value-head" }, h("span", {}, "Value"), kindTag), shown,
      actions, editorSlot);
  }

  // --------------------------------------------------------------------------- cluster view
  function clusterView(signal) {
    const facts = h("dl", { id: "cluster-facts", class: "meta" });
    const peers = h("tbody", { id: "peers" });
    const updated = h("p", { class: "muted" }, "loading…");
    const refresh = h("button", { id: "cluster-refresh" }, "Refresh");
    const view = h("section", { class: "cluster" },
      h("h2", {}, "Cluster"), facts,
      h("h3", {}, "Raft peers"),
      h("table", { class: "peers" },
        h("thead", {}, h("tr", {}, ["Node", "ID", "Address", "Role", "Voter"].map(
          (title) => h("th", {}, title)))),
        peers),
      h("div", { class: "buttons" }, refresh), updated);

    async function load() {
      const [self, leader, config, kv] = await Promise.all([
        api("GET", "/v1/agent/self", { signal, what: "Reading the agent's details" }),
        api("GET", "/v1/status/leader", { signal, what: "Finding the leader" }),
        api("GET", "/v1/operator/raft/configuration",
          { signal, what: "Reading the Raft configuration" }),
        // A stale read answered by this agent: its last contact with the leader, the KV index.
        api("GET", "/v1/kv/", { query: { keys: true, separator: "/", stale: true }, signal,
          what: "Reading the KV index" }),
      ]);
      const raft = (self.data.Stats || {}).raft || {};
      agentInfo.datacenter = self.data.Config.Datacenter;
      agentInfo.node = self.data.Config.NodeName;
      agentInfo.leader = leader.data;
      renderStatus(kv.knownLeader);
      const fact = (name, value, id) => [h("dt", {}, name), h("dd", { id }, value)];
      facts.replaceChildren(
        ...fact("Datacenter", self.data.Config.Datacenter, "cluster-dc"),
        ...fact("This agent", `${self.data.Config.NodeName} (${raft.state || "?"})`, "cluster-agent"),
        ...fact("Leader", leader.data || "none known", "cluster-leader"),
        ...fact("Known leader", kv.knownLeader === "true" ? "yes" : "no", "cluster-known-leader"),
        ...fact("Last contact", `${kv.lastContact} ms`, "cluster-last-contact"),
        ...fact("KV index", kv.index, "cluster-kv-index"),
        ...fact("Raft commit / applied index",
          `${raft.commit_index || "?"} / ${raft.applied_index || "?"}`, "cluster-raft-index"),
        ...fact("Configuration index", config.data.Index, "cluster-config-index"));
      peers.replaceChildren(...config.data.Servers.map((server) => h("tr", {
        dataset: { node: server.Node },
      },
      h("td", {}, server.Node), h("td", {}, server.ID), h("td", {}, server.Address),
      h("td", { class: server.Leader ? "leader" : "" },
        server.Leader ? "leader" : server.Voter ? "follower" : "non-voter"),
      h("td", {}, server.Voter ? "yes" : "no"))));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} · re-read every ` +
        `${CLUSTER_REFRESH_MS / 1000} s`;
    }

    async function loop() {
      while (!signal.aborted) {
        try {
          await load();
          clearError("cluster");
        } catch (err) {
          if (signal.aborted || err.name === "AbortError") return;
          showError(err.message, "cluster");
        }
        await sleep(CLUSTER_REFRESH_MS, signal);
      }
    }
    refresh.addEventListener("click", () => busy(refresh, load));
    loop();
    return view;
  }

  // -------------------------------------------------------------------------------- routing
  let viewAbort = null;

  function decodeKey(encoded) {
    return encoded.split("/").map((segment) => {
      try {
        return decodeURIComponent(segment);
      } catch {
        return segment; // a hand-typed "%" that is not an escape: taken as it is
      }
    }).join("/");
  }

  function route() {
    if (viewAbort) viewAbort.abort();
    viewAbort = new AbortController();
    const signal = viewAbort.signal;
    clearError();
    showNotice(pendingNotice);
    pendingNotice = "";
    const hash = location.hash.replace(/^#/, "").split("?")[0] || "/kv/";
    let view;
    if (hash === "/cluster") {
      view = clusterView(signal);
    } else if (hash.startsWith("/create/")) {
      view = createView(decodeKey(hash.slice("/create/".length)));
    } else if (hash.startsWith("/kv/")) {
      const key = decodeKey(hash.slice("/kv/".length));
      view = key === "" || key.endsWith("/") ? folderView(key, signal) : keyView(key, signal);
    } else {
      view = h("p", { class: "warning" }, `There is no page at #${hash}. `,
        h("a", { href: "#/kv/" }, "Go to Key/Value"));
    }
    $("tab-kv").classList.toggle("active", hash !== "/cluster");
    $("tab-cluster").classList.toggle("active", hash === "/cluster");
    $("view").replaceChildren(view);
  }

  window.addEventListener("error", (event) => {
    showError(`Unexpected error in the page: ${event.message}`);
  });
  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason;
    if (reason && reason.name === "AbortError") return;
    showError(`Unexpected error in the page: ${reason && reason.message ? reason.message : reason}`);
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("error-close").addEventListener("click", () => clearError());
    setupToken();
    window.addEventListener("hashchange", route);
    route();
    loadAgentInfo();
  });
})();
