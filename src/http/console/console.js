// The rdev console: a small single-page client of this server's own API. The key lives in
// sessionStorage (this tab only) and goes out as X-API-Key; the terminal opens with a
// single-use ticket, since a browser cannot set headers on a WebSocket. Everything the server
// returns is put on the page as text, never as HTML.
(function () {
  "use strict";

  const KEY_STORAGE = "rdev-api-key";
  // The command the Run page follows, in localStorage so a reload or another tab finds it (an
  // id, no secret). The history of typed commands stays in this tab, like the key.
  const RUNNING_STORAGE = "rdev-console-running";
  const HISTORY_STORAGE = "rdev-console-history";
  const HISTORY_MAX = 100;
  const PAGES = ["projects", "run", "terminal", "files", "queue", "audit"];
  const $ = (id) => document.getElementById(id);
  let projects = [];
  let queueTimer = null;
  let terminal = null;
  // The Run page's follower and the Queue page's, each stopped when replaced.
  let runFollow = null;
  let queueFollow = null;
  const queuePage = { selected: null };

  // ---------- the API ----------

  function key() {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  }

  async function api(method, path, body, accept) {
    const headers = { "X-API-Key": key() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (accept) headers.Accept = accept;
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (response.status === 401) {
      signOut("The key was refused (401). Sign in again.");
      throw new Error("unauthorized");
    }
    return response;
  }

  async function json(method, path, body) {
    const response = await api(method, path, body);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = data.error || {};
      throw new Error(`${response.status} ${error.code || ""}: ${error.message || response.statusText}`);
    }
    return data;
  }

  // ---------- page helpers ----------

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === undefined || text === null ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function badge(row, text) {
    const td = cell(row, "");
    const span = document.createElement("span");
    span.className = `badge ${text}`;
    span.textContent = text;
    td.appendChild(span);
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
  }

  function notice(text) {
    const element = $("notice");
    element.textContent = text || "";
    element.hidden = !text;
  }

  // Projects are typed (a key without projects:read knows its project's id), with the ones
  // this key may list offered.
  function fillProjectChoices() {
    $("project-ids").replaceChildren(
      ...projects.map((project) => {
        const option = document.createElement("option");
        option.value = project.id;
        option.label = project.status;
        return option;
      }),
    );
    for (const id of ["run-project", "terminal-project", "files-project"]) {
      if (!$(id).value && projects.length) $(id).value = projects[0].id;
    }
  }

  // ---------- navigation ----------

  function show(page) {
    const signedIn = Boolean(key());
    if (!signedIn) page = "login";
    else if (!PAGES.includes(page)) page = "projects";
    for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
    for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === page);
    $("nav").hidden = !signedIn;
    $("logout").hidden = !signedIn;
    clearInterval(queueTimer);
    queueTimer = null;
    notice("");
    if (page === "projects" || page === "run" || page === "terminal") loadProjects().catch(report);
    if (page === "run") reattach();
    if (page !== "queue") stopFollowing("queue");
    if (page === "queue") {
      loadQueue().catch(report);
      queueTimer = setInterval(() => loadQueue().catch(report), 2000);
    }
    if (page === "audit") loadAudit().catch(report);
    if (page === "files") loadProjects().then(() => $("files-project").value && loadFiles()).catch(report);
  }

  function report(error) {
    if (error && error.message !== "unauthorized") notice(String(error.message || error));
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
    sessionStorage.removeItem(HISTORY_STORAGE);
    stopFollowing("run");
    stopFollowing("queue");
    closeTerminal();
    location.hash = "#login";
    show("login");
    if (message) {
      $("login-error").textContent = message;
      $("login-error").hidden = false;
    }
  }

  // ---------- sign in ----------

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = $("key").value.trim();
    $("login-error").hidden = true;
    // A key that may not list projects (403) is still a key: it may do what its scopes allow.
    const response = await fetch("/projects", { headers: { "X-API-Key": candidate } });
    if (!response.ok && response.status !== 403) {
      const data = await response.json().catch(() => ({}));
      $("login-error").textContent = (data.error && data.error.message) || `refused (${response.status})`;
      $("login-error").hidden = false;
      return;
    }
    sessionStorage.setItem(KEY_STORAGE, candidate);
    $("key").value = "";
    location.hash = "#projects";
    show("projects");
  });

  $("logout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));

  // ---------- projects ----------

  async function loadProjects() {
    const response = await api("GET", "/projects");
    $("projects-forbidden").hidden = response.status !== 403;
    if (response.status === 403) {
      projects = [];
      $("projects").replaceChildren();
      $("projects-empty").hidden = true;
      fillProjectChoices();
      return;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${response.status}: ${(data.error && data.error.message) || response.statusText}`);
    projects = data.projects || [];
    $("projects-empty").hidden = projects.length > 0;
    const rows = projects.map((project) => {
      const row = document.createElement("tr");
      cell(row, project.id);
      badge(row, project.status);
      cell(row, project.executor + (project.pod ? ` · ${project.pod}` : ""));
      const actions = cell(row, "");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "secondary";
      open.textContent = "Terminal";
      open.addEventListener("click", () => {
        location.hash = "#terminal";
        $("terminal-project").value = project.id;
      });
      actions.appendChild(open);
      return row;
    });
    $("projects").replaceChildren(...rows);
    fillProjectChoices();
  }

  // ---------- following a command's output (SSE over fetch) ----------

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        onEvent(name, data.join("\n"));
      }
    }
  }

  function stopFollowing(which) {
    const follow = which === "run" ? runFollow : queueFollow;
    if (follow) follow.abort();
    if (which === "run") runFollow = null;
    else queueFollow = null;
  }

  // Follows `/commands/{id}/events` from its start into `output` (colours rendered, stderr
  // apart); `onEnd` gets the command as it ended. Returns the AbortController that stops it.
  function follow(id, output, onEnd) {
    const controller = new AbortController();
    const writers = { stdout: new window.RdevAnsi.AnsiWriter(output, ""), stderr: new window.RdevAnsi.AnsiWriter(output, "stderr") };
    output.replaceChildren();
    (async () => {
      const response = await fetch(`/commands/${encodeURIComponent(id)}/events`, {
        headers: { "X-API-Key": key(), Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (response.status === 403) {
        // A key that may run commands but not read them (no commands:read) cannot follow one.
        onEnd({ status: "failed", forbidden: true, error: "this key may not read commands (commands:read), so its output cannot be shown here" });
        return;
      }
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || response.statusText);
      }
      await readEvents(response, (name, data) => {
        if (writers[name]) {
          writers[name].write(data);
          output.scrollTop = output.scrollHeight;
        }
        if (name === "exit") onEnd(JSON.parse(data));
        if (name === "error") {
          let why = data;
          try {
            const body = JSON.parse(data);
            why = (body.error && body.error.message) || body.message || data;
          } catch (_) {
            // Plain text: shown as it is.
          }
          onEnd({ status: "failed", error: why });
        }
      });
    })().catch((error) => {
      if (error.name !== "AbortError") onEnd({ status: "failed", error: error.message });
    });
    return controller;
  }

  function describeEnd(end) {
    const took = Date.parse(end.finished_at) - Date.parse(end.started_at);
    const ms = end.duration_ms !== undefined ? end.duration_ms : Number.isNaN(took) ? "?" : took;
    if (end.status === "succeeded") return ["good", `Succeeded in ${ms} ms: exit code 0`];
    if (end.status === "timed_out") return ["bad", "Timed out"];
    if (end.status === "cancelled") return ["bad", `Cancelled${end.error ? `: ${end.error}` : ""}`];
    if (end.exit_code !== null && end.exit_code !== undefined) return ["bad", `Failed: exit code ${end.exit_code}`];
    return ["bad", `Failed${end.error ? `: ${end.error}` : ""}`];
  }

  function setStatus(element, tone, text) {
    element.className = `status ${tone || ""}`.trim();
    element.textContent = text;
  }

  // ---------- run a command ----------

  function running(command) {
    $("run-start").disabled = Boolean(command);
    $("run-stop").hidden = !command;
    if (command) localStorage.setItem(RUNNING_STORAGE, JSON.stringify(command));
    else localStorage.removeItem(RUNNING_STORAGE);
  }

  function attach(command) {
    stopFollowing("run");
    running(command);
    setStatus($("run-status"), "", `Running in ${command.project_id}: ${command.command}`);
    runFollow = follow(command.id, $("run-output"), (end) => {
      const [tone, text] = describeEnd(end);
      setStatus($("run-status"), tone, end.forbidden ? `Queued as ${command.id}; ${end.error}` : text);
      running(null);
    });
  }

  // A command this browser started that may still run: follow it again.
  function reattach() {
    if (runFollow) return;
    const stored = JSON.parse(localStorage.getItem(RUNNING_STORAGE) || "null");
    if (!stored) return;
    $("run-project").value = stored.project_id;
    $("run-command").value = stored.command;
    attach(stored);
  }

  function remember(command) {
    const history = JSON.parse(sessionStorage.getItem(HISTORY_STORAGE) || "[]").filter((c) => c !== command);
    history.push(command);
    sessionStorage.setItem(HISTORY_STORAGE, JSON.stringify(history.slice(-HISTORY_MAX)));
    historyAt = null;
  }

  // ↑ and ↓ walk the history, as in a shell; what was being typed comes back past the newest.
  let historyAt = null;
  let typed = "";
  $("run-command").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
    const history = JSON.parse(sessionStorage.getItem(HISTORY_STORAGE) || "[]");
    if (!history.length) return;
    event.preventDefault();
    if (historyAt === null) {
      if (event.key === "ArrowDown") return;
      typed = $("run-command").value;
      historyAt = history.length;
    }
    historyAt = Math.max(0, historyAt + (event.key === "ArrowUp" ? -1 : 1));
    if (historyAt >= history.length) {
      historyAt = null;
      $("run-command").value = typed;
    } else {
      $("run-command").value = history[historyAt];
    }
  });

  async function enqueue(project, command) {
    return json("POST", `/projects/${encodeURIComponent(project)}/commands`, { command });
  }

  $("run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const project = $("run-project").value.trim();
    const command = $("run-command").value;
    remember(command);
    try {
      attach(await enqueue(project, command));
    } catch (error) {
      if (error.message !== "unauthorized") setStatus($("run-status"), "bad", `Refused: ${error.message}`);
    }
  });

  $("run-stop").addEventListener("click", async () => {
    const stored = JSON.parse(localStorage.getItem(RUNNING_STORAGE) || "null");
    if (!stored) return;
    try {
      await json("POST", `/commands/${encodeURIComponent(stored.id)}/cancel`);
    } catch (error) {
      report(error);
    }
  });

  $("run-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("run-output").textContent);
      $("run-copy").textContent = "Copied";
    } catch (error) {
      $("run-copy").textContent = "Copy failed";
    }
    setTimeout(() => ($("run-copy").textContent = "Copy output"), 1500);
  });

  $("run-queue").addEventListener("click", async () => {
    const project = $("run-project").value.trim();
    try {
      const command = await enqueue(project, $("run-command").value);
      remember(command.command);
      location.hash = "#queue";
      notice(`Queued ${command.id}`);
    } catch (error) {
      report(error);
    }
  });

  // ---------- terminal ----------

  function closeTerminal() {
    if (terminal) {
      terminal.socket.close();
      terminal.term.dispose();
      terminal = null;
    }
    $("terminal-close").disabled = true;
  }

  $("terminal-close").addEventListener("click", () => {
    closeTerminal();
    $("terminal-status").textContent = "Closed.";
  });

  $("terminal-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    closeTerminal();
    const project = $("terminal-project").value.trim();
    const status = $("terminal-status");
    try {
      const { ticket } = await json("POST", `/projects/${encodeURIComponent(project)}/terminal/tickets`, {});
      const term = new window.Terminal({ cursorBlink: true, fontSize: 14, convertEol: false });
      const fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      const container = $("terminal");
      container.replaceChildren();
      term.open(container);
      fit.fit();
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      const query = new URLSearchParams({ ticket, cols: String(term.cols), rows: String(term.rows) });
      const socket = new WebSocket(`${scheme}://${location.host}/projects/${encodeURIComponent(project)}/terminal?${query}`);
      socket.binaryType = "arraybuffer";
      terminal = { term, socket, fit };
      const encoder = new TextEncoder();
      socket.addEventListener("open", () => {
        status.textContent = `Connected to ${project}.`;
        $("terminal-close").disabled = false;
        term.focus();
      });
      socket.addEventListener("message", (message) => {
        if (typeof message.data === "string") {
          const frame = JSON.parse(message.data);
          if (frame.type === "exit") status.textContent = `The shell exited with ${frame.exit_code}.`;
          if (frame.type === "error") status.textContent = `Refused: ${frame.error.message}`;
        } else {
          term.write(new Uint8Array(message.data));
        }
      });
      socket.addEventListener("close", (close) => {
        if (!status.textContent.startsWith("The shell exited")) status.textContent = `Disconnected${close.reason ? `: ${close.reason}` : "."}`;
        $("terminal-close").disabled = true;
      });
      term.onData((data) => socket.readyState === WebSocket.OPEN && socket.send(encoder.encode(data)));
      term.onResize(({ cols, rows }) => socket.readyState === WebSocket.OPEN && socket.send(JSON.stringify({ type: "resize", cols, rows })));
    } catch (error) {
      if (error.message !== "unauthorized") status.textContent = `Could not open: ${error.message}`;
    }
  });

  window.addEventListener("resize", () => terminal && terminal.fit.fit());

  // ---------- files ----------

  // The ETag of each file as this page last saw its content, by project and path: what a
  // replacement must still match.
  const seenEtags = new Map();
  const filesPath = (path) => `/projects/${encodeURIComponent($("files-project").value.trim())}/files${path}`;
  const joinPath = (folder, name) => (folder ? `${folder}/${name}` : name);
  const etagKey = (path) => `${$("files-project").value.trim()}:${path}`;

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "";
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  }

  function openFolder(path) {
    $("files-path").value = path;
    loadFiles().catch(report);
  }

  async function loadFiles() {
    const folder = $("files-path").value.trim().replace(/^\/+|\/+$/g, "");
    const query = new URLSearchParams({ limit: "500" });
    if (folder) query.set("path", folder);
    const data = await json("GET", filesPath(`?${query}`));
    const rows = [];
    if (folder) {
      const up = document.createElement("tr");
      const link = document.createElement("a");
      link.className = "folder";
      link.textContent = "..";
      link.addEventListener("click", () => openFolder(folder.split("/").slice(0, -1).join("/")));
      cell(up, "").appendChild(link);
      cell(up, "");
      cell(up, "");
      cell(up, "");
      rows.push(up);
    }
    for (const entry of data.entries || []) {
      const path = joinPath(folder, entry.name);
      const row = document.createElement("tr");
      row.dataset.name = entry.name;
      const name = cell(row, entry.type === "dir" ? "" : entry.name, "command");
      if (entry.type === "dir") {
        const link = document.createElement("a");
        link.className = "folder";
        link.textContent = `${entry.name}/`;
        link.addEventListener("click", () => openFolder(path));
        name.appendChild(link);
      }
      cell(row, entry.type === "dir" ? "" : size(entry.size));
      cell(row, when(entry.modified_at));
      const actions = cell(row, "");
      if (entry.type !== "dir") actions.appendChild(button("Download", () => download(path, entry.name)));
      actions.appendChild(button("Delete", () => remove(path, entry.type === "dir")));
      rows.push(row);
    }
    $("files").replaceChildren(...rows);
    setStatus($("files-status"), "", `${$("files-project").value.trim()}:/${folder}${data.next_cursor ? " (the first 500 entries)" : ""}`);
  }

  function button(text, onClick) {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "secondary small";
    element.textContent = text;
    element.addEventListener("click", () => onClick().catch(report));
    return element;
  }

  async function download(path, name) {
    const response = await api("GET", filesPath(`/content?${new URLSearchParams({ path })}`));
    if (!response.ok) throw new Error(`${response.status}: could not download ${path}`);
    if (response.headers.get("ETag")) seenEtags.set(etagKey(path), response.headers.get("ETag"));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  // The ETag a change of `path` must still match: the one last seen here, else the server's now.
  async function etagFor(path) {
    const seen = seenEtags.get(etagKey(path));
    if (seen) return seen;
    const head = await api("HEAD", filesPath(`/content?${new URLSearchParams({ path })}`));
    return head.headers.get("ETag");
  }

  async function remove(path, folder) {
    if (!window.confirm(`Delete ${path}${folder ? " and everything in it" : ""}?`)) return;
    const query = new URLSearchParams({ path });
    if (folder) query.set("recursive", "true");
    const etag = folder ? null : await etagFor(path);
    const headers = { "X-API-Key": key() };
    if (etag) headers["If-Match"] = etag;
    const response = await fetch(filesPath(`?${query}`), { method: "DELETE", headers });
    if (response.status === 412) {
      seenEtags.delete(etagKey(path));
      setStatus($("files-status"), "bad", `${path} changed since you looked at it: not deleted.`);
      return;
    }
    if (!response.ok && response.status !== 204) {
      const data = await response.json().catch(() => ({}));
      throw new Error((data.error && data.error.message) || response.statusText);
    }
    seenEtags.delete(etagKey(path));
    await loadFiles();
  }

  $("files-upload").addEventListener("change", async () => {
    const file = $("files-upload").files[0];
    if (!file) return;
    const folder = $("files-path").value.trim().replace(/^\/+|\/+$/g, "");
    const path = joinPath(folder, file.name);
    const exists = [...document.querySelectorAll("#files tr")].some((row) => row.dataset.name === file.name);
    const headers = { "X-API-Key": key() };
    try {
      if (exists) {
        if (!window.confirm(`Replace ${path}?`)) return;
        const etag = await etagFor(path);
        if (etag) headers["If-Match"] = etag;
      }
      const response = await fetch(filesPath(`/content?${new URLSearchParams({ path })}`), { method: "PUT", headers, body: file });
      const data = await response.json().catch(() => ({}));
      if (response.status === 412) {
        setStatus($("files-status"), "bad", `${path} changed since you looked at it: not replaced. Download it again to see the new version.`);
        seenEtags.delete(etagKey(path));
        return;
      }
      if (!response.ok) throw new Error((data.error && data.error.message) || response.statusText);
      if (data.etag) seenEtags.set(etagKey(path), `"${data.etag}"`);
      await loadFiles();
      setStatus($("files-status"), "good", `Uploaded ${path} (${size(data.size)})`);
    } catch (error) {
      report(error);
    } finally {
      $("files-upload").value = "";
    }
  });

  $("files-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFiles().catch(report);
  });

  // ---------- paged lists ----------

  // A list shown a page at a time, with `<name>-first` and `<name>-next` buttons: the cursors of
  // the pages before this one, the next page's, and a count of the requests, so an answer older
  // than the latest is dropped (a refresh that left before a filter changed cannot overwrite the
  // filtered list). `load` shows the page at `cursor()`.
  function pager(name, load) {
    const state = { cursors: [], next: null, asked: 0 };
    const pages = {
      cursor: () => state.cursors[state.cursors.length - 1],
      ask: () => ++state.asked,
      isLatest: (asked) => asked === state.asked,
      shown(nextCursor) {
        state.next = nextCursor || null;
        $(`${name}-next`).disabled = !state.next;
        $(`${name}-first`).disabled = state.cursors.length === 0;
      },
      reload() {
        state.cursors = [];
        load().catch(report);
      },
    };
    $(`${name}-first`).addEventListener("click", pages.reload);
    $(`${name}-next`).addEventListener("click", () => {
      if (!state.next) return;
      state.cursors.push(state.next);
      load().catch(report);
    });
    return pages;
  }

  // ---------- queue ----------

  const queuePages = pager("queue", loadQueue);

  function queueQuery() {
    const query = new URLSearchParams({ limit: "25" });
    if ($("queue-status").value) query.set("status", $("queue-status").value);
    if ($("queue-project").value.trim()) query.set("project_id", $("queue-project").value.trim());
    if (queuePages.cursor()) query.set("cursor", queuePages.cursor());
    return query;
  }

  async function loadQueue() {
    const asked = queuePages.ask();
    const data = await json("GET", `/commands?${queueQuery()}`);
    if (!queuePages.isLatest(asked)) return;
    queuePages.shown(data.next_cursor);
    const rows = (data.commands || []).map((command) => {
      const row = document.createElement("tr");
      row.className = "clickable";
      row.dataset.id = command.id;
      row.classList.toggle("selected", queuePage.selected && queuePage.selected.id === command.id);
      cell(row, when(command.created_at));
      cell(row, command.origin);
      cell(row, command.project_id);
      cell(row, command.command, "command");
      badge(row, command.status);
      cell(row, command.exit_code);
      row.addEventListener("click", () => select(command));
      return row;
    });
    $("queue").replaceChildren(...rows);
    const selected = queuePage.selected && (data.commands || []).find((c) => c.id === queuePage.selected.id);
    if (selected) $("queue-cancel").hidden = !["queued", "running"].includes(selected.status);
  }

  function select(command) {
    queuePage.selected = command;
    for (const row of document.querySelectorAll("#queue tr")) row.classList.toggle("selected", row.dataset.id === command.id);
    $("queue-detail").hidden = false;
    $("queue-cancel").hidden = !["queued", "running"].includes(command.status);
    setStatus($("queue-selected"), "", `${command.project_id}: ${command.command} (${command.status})`);
    stopFollowing("queue");
    queueFollow = follow(command.id, $("queue-output"), (end) => {
      const [tone, text] = describeEnd(end);
      setStatus($("queue-selected"), tone, `${command.project_id}: ${command.command}: ${text}`);
      $("queue-cancel").hidden = true;
    });
  }

  $("queue-cancel").addEventListener("click", async () => {
    if (!queuePage.selected) return;
    try {
      await json("POST", `/commands/${encodeURIComponent(queuePage.selected.id)}/cancel`);
      loadQueue().catch(report);
    } catch (error) {
      report(error);
    }
  });

  $("queue-status").addEventListener("change", queuePages.reload);
  $("queue-project").addEventListener("change", queuePages.reload);
  $("queue-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    queuePages.reload();
  });

  // ---------- audit ----------

  const auditPages = pager("audit", loadAudit);

  function auditQuery() {
    const query = new URLSearchParams({ limit: "50" });
    if ($("audit-project").value.trim()) query.set("project_id", $("audit-project").value.trim());
    if ($("audit-key").value.trim()) query.set("api_key_id", $("audit-key").value.trim());
    if ($("audit-outcome").value) query.set("outcome", $("audit-outcome").value);
    if ($("audit-since").value) {
      query.set("since", new Date(Date.now() - Number($("audit-since").value) * 1000).toISOString());
    }
    if (auditPages.cursor()) query.set("cursor", auditPages.cursor());
    return query;
  }

  async function loadAudit() {
    const asked = auditPages.ask();
    const data = await json("GET", `/audit?${auditQuery()}`);
    if (!auditPages.isLatest(asked)) return;
    auditPages.shown(data.next_cursor);
    const rows = (data.entries || []).map((entry) => {
      const row = document.createElement("tr");
      cell(row, when(entry.at));
      cell(row, entry.project_id);
      const what = cell(row, entry.command, "command");
      if (entry.reason) {
        const why = document.createElement("div");
        why.className = "reason";
        why.textContent = entry.reason;
        what.appendChild(why);
      }
      badge(row, entry.outcome);
      cell(row, entry.exit_code);
      cell(row, entry.duration_ms);
      return row;
    });
    $("audit").replaceChildren(...rows);
  }

  $("audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    auditPages.reload();
  });
  for (const id of ["audit-outcome", "audit-since"]) $(id).addEventListener("change", auditPages.reload);

  show(location.hash.slice(1));
})();
