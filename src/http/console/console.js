// The rdev console: a small single-page client of this server's own API. The key lives in
// sessionStorage (this tab only) and goes out as X-API-Key; the terminal opens with a
// single-use ticket, since a browser cannot set headers on a WebSocket. Everything the server
// returns is put on the page as text, never as HTML.
(function () {
  "use strict";

  const KEY_STORAGE = "rdev-api-key";
  const PAGES = ["projects", "run", "terminal", "queue", "audit"];
  const $ = (id) => document.getElementById(id);
  let projects = [];
  let queueTimer = null;
  let terminal = null;

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

  function fillProjectSelects() {
    for (const id of ["run-project", "terminal-project"]) {
      const select = $(id);
      const chosen = select.value;
      select.replaceChildren(
        ...projects.map((project) => {
          const option = document.createElement("option");
          option.value = project.id;
          option.textContent = `${project.id} (${project.status})`;
          return option;
        }),
      );
      if (projects.some((project) => project.id === chosen)) select.value = chosen;
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
    if (page === "queue") {
      loadQueue().catch(report);
      queueTimer = setInterval(() => loadQueue().catch(report), 2000);
    }
    if (page === "audit") loadAudit().catch(report);
  }

  function report(error) {
    if (error && error.message !== "unauthorized") notice(String(error.message || error));
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORAGE);
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
    const response = await fetch("/projects", { headers: { "X-API-Key": candidate } });
    if (!response.ok) {
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
    const data = await json("GET", "/projects");
    projects = data.projects || [];
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
    fillProjectSelects();
  }

  // ---------- run a command, output live (SSE over fetch) ----------

  function appendOutput(target, stream, text) {
    const span = document.createElement("span");
    if (stream === "stderr") span.className = "stderr";
    span.textContent = text;
    target.appendChild(span);
    target.scrollTop = target.scrollHeight;
  }

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

  $("run-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const project = $("run-project").value;
    const output = $("run-output");
    output.replaceChildren();
    $("run-status").textContent = `Running in ${project}…`;
    try {
      const response = await api("POST", `/projects/${encodeURIComponent(project)}/shell`, { command: $("run-command").value }, "text/event-stream");
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        throw new Error((data.error && data.error.message) || response.statusText);
      }
      await readEvents(response, (name, data) => {
        if (name === "stdout" || name === "stderr") appendOutput(output, name, data);
        if (name === "exit") {
          const end = JSON.parse(data);
          const how = end.timed_out ? "timed out" : `exit code ${end.exit_code}`;
          $("run-status").textContent = `Finished in ${end.duration_ms} ms: ${how}`;
        }
      });
    } catch (error) {
      if (error.message !== "unauthorized") $("run-status").textContent = `Failed: ${error.message}`;
    }
  });

  $("run-queue").addEventListener("click", async () => {
    const project = $("run-project").value;
    try {
      const command = await json("POST", `/projects/${encodeURIComponent(project)}/commands`, { command: $("run-command").value });
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
    const project = $("terminal-project").value;
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

  // ---------- queue ----------

  async function loadQueue() {
    const data = await json("GET", "/commands?limit=50");
    const rows = (data.commands || []).map((command) => {
      const row = document.createElement("tr");
      row.className = "clickable";
      cell(row, when(command.created_at));
      cell(row, command.project_id);
      cell(row, command.command, "command");
      badge(row, command.status);
      cell(row, command.exit_code);
      row.addEventListener("click", () => showOutput(command.id));
      return row;
    });
    $("queue").replaceChildren(...rows);
  }

  async function showOutput(id) {
    const output = $("queue-output");
    output.hidden = false;
    output.replaceChildren();
    for (const stream of ["stdout", "stderr"]) {
      const response = await api("GET", `/commands/${encodeURIComponent(id)}/output?stream=${stream}`);
      if (response.ok) appendOutput(output, stream, await response.text());
    }
  }

  // ---------- audit ----------

  async function loadAudit() {
    const data = await json("GET", "/audit?limit=100");
    const rows = (data.entries || []).map((entry) => {
      const row = document.createElement("tr");
      cell(row, when(entry.at));
      cell(row, entry.project_id);
      cell(row, entry.command, "command");
      badge(row, entry.outcome);
      cell(row, entry.exit_code);
      cell(row, entry.duration_ms);
      return row;
    });
    $("audit").replaceChildren(...rows);
  }

  show(location.hash.slice(1));
})();
