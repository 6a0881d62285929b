// The web console in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Signs in with a key, sees the projects (and the empty state), runs commands (live output, ANSI
// colours, a red failure, Stop, a reload that re-attaches, history, copy), types into a terminal,
// follows and cancels commands on the queue page (origin, filters, paging), reads the audit log,
// signs in with a key that may not list projects, and checks every page at 400 px wide; a
// screenshot of each page at 1280 and 400 px. Any Content-Security-Policy violation or console
// error on the way fails it.
//
//   RDEV_URL           the server (http://127.0.0.1:PORT)
//   RDEV_KEY           an admin key
//   RDEV_PROJECTS_DIR  the server's projects folder (hello is moved away for the empty state)
//   RDEV_SCREENSHOTS   the folder the screenshots go to
//   RDEV_CHROMIUM      the browser (default /usr/bin/chromium)
import { mkdirSync, renameSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.RDEV_URL;
const key = process.env.RDEV_KEY;
const shots = process.env.RDEV_SCREENSHOTS;
const projectsDir = process.env.RDEV_PROJECTS_DIR;
const TIMEOUT = 15_000;
const PAGES = ["projects", "run", "terminal", "files", "queue", "audit"];

async function apiCall(method, path, body) {
  const headers = { "X-API-Key": key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) fail(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

// Writes a file into the hello project: the signal a waiting command polls for.
async function putFile(path, content) {
  const response = await fetch(`${url}/projects/hello/files/content?path=${encodeURIComponent(path)}`, { method: "PUT", headers: { "X-API-Key": key }, body: content });
  if (!response.ok) fail(`PUT ${path}: ${response.status} ${await response.text()}`);
}

async function statusOf(id) {
  return (await apiCall("GET", `/commands/${id}`)).status;
}

// Nothing on the page is wider than the window: it never scrolls sideways.
async function fitsWidth(page, what) {
  const [scroll, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (scroll > width) fail(`${what} scrolls sideways at ${width} px: ${scroll} px wide`);
}

function fail(message) {
  throw new Error(message);
}

async function main() {
  mkdirSync(shots, { recursive: true });
  // playwright's launch() gives the browser a fresh profile folder of its own, removed after.
  // Without the background-networking flags Chromium keeps dialling hosts this machine cannot reach.
  const browser = await chromium.launch({
    executablePath: process.env.RDEV_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const problems = [];
  // While the wrong key is tried, the browser logs the 401 it gets, and a key that may not list
  // projects the 403s: those are expected.
  let refusalExpected = null;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: url });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("console", (message) => {
      const expected = refusalExpected && message.text().includes(`status of ${refusalExpected}`);
      if (message.type() === "error" && !expected) problems.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    // Every confirmation (delete, replace) is answered yes.
    page.on("dialog", (dialog) => dialog.accept());
    await page.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (event) => {
        window.__violations = window.__violations || [];
        window.__violations.push(`${event.violatedDirective}: ${event.blockedURI}`);
      });
    });
    const shot = (name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

    // Sign in.
    const response = await page.goto(`${url}/console`);
    const policy = response.headers()["content-security-policy"] || "";
    if (!policy.includes("script-src 'self'") || policy.includes("unsafe-inline")) fail(`weak policy: ${policy}`);
    await page.locator("#key").waitFor();
    // Signed out, only the sign-in form shows: no navigation.
    const navShown = await page.evaluate(() => getComputedStyle(document.getElementById("nav")).display);
    if (navShown !== "none") fail(`the nav shows while signed out: ${navShown}`);
    await shot("login");
    refusalExpected = 401;
    await page.fill("#key", "rdev_not-a-key");
    await page.click("#login-form button[type=submit]");
    await page.locator("#login-error").filter({ hasText: "malformed" }).waitFor();
    refusalExpected = null;
    await page.fill("#key", key);
    await page.click("#login-form button[type=submit]");

    // Projects.
    await page.locator("#projects tr", { hasText: "hello" }).waitFor();
    const stored = await page.evaluate(() => [sessionStorage.getItem("rdev-api-key"), localStorage.length]);
    if (stored[0] !== key || stored[1] !== 0) fail(`the key is not (only) in sessionStorage: ${stored}`);
    await shot("projects");

    // With no project, the page says how to add one.
    renameSync(join(projectsDir, "hello"), join(projectsDir, "..", "hello-away"));
    await page.waitForTimeout(1100); // the server re-reads the folder after at most a second
    await page.reload();
    await page.locator("#projects-empty", { hasText: "mkdir projects/my-app" }).waitFor();
    renameSync(join(projectsDir, "..", "hello-away"), join(projectsDir, "hello"));
    await page.waitForTimeout(1100);
    await page.reload();
    await page.locator("#projects tr", { hasText: "hello" }).waitFor();

    // Run a command: its first line shows while it still runs; Run waits and Stop shows.
    await page.click('nav a[data-page="run"]');
    await page.fill("#run-project", "hello");
    await page.fill("#run-command", "echo hello; sleep 1; echo again");
    await page.click("#run-start");
    await page.locator("#run-output", { hasText: "hello" }).waitFor();
    const early = await page.evaluate(() => [
      document.getElementById("run-output").textContent,
      document.getElementById("run-status").textContent,
      document.getElementById("run-start").disabled,
      document.getElementById("run-stop").hidden,
    ]);
    if (early[0].includes("again") || !early[1].startsWith("Running")) fail(`output did not arrive live: ${early}`);
    if (!early[2] || early[3]) fail(`while it runs, Run is disabled and Stop shows: ${early}`);
    await page.locator("#run-status.good", { hasText: "exit code 0" }).waitFor();
    const output = await page.textContent("#run-output");
    if (output !== "hello\nagain\n") fail(`run output: ${JSON.stringify(output)}`);
    if (await page.locator("#run-start").isDisabled()) fail("Run stays disabled after the end");

    // Colours are rendered, and a failure is red.
    await page.fill("#run-command", "printf '\\033[31mred\\033[0m plain\\n'; exit 3");
    await page.click("#run-start");
    await page.locator("#run-status.bad", { hasText: "exit code 3" }).waitFor();
    const red = await page.locator("#run-output span.ansi-31").textContent();
    if (red !== "red" || (await page.textContent("#run-output")) !== "red plain\n") fail(`colours: ${red}`);
    await shot("run");

    // Copy the output.
    await page.click("#run-copy");
    const copied = await page.evaluate(() => navigator.clipboard.readText());
    if (copied !== "red plain\n") fail(`copied ${JSON.stringify(copied)}`);

    // Up-arrow brings back the last command, then the one before.
    await page.fill("#run-command", "");
    await page.focus("#run-command");
    await page.keyboard.press("ArrowUp");
    if (!(await page.inputValue("#run-command")).startsWith("printf")) fail("ArrowUp did not recall the last command");
    await page.keyboard.press("ArrowUp");
    if ((await page.inputValue("#run-command")) !== "echo hello; sleep 1; echo again") fail("ArrowUp twice");
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("ArrowDown");
    if ((await page.inputValue("#run-command")) !== "") fail("ArrowDown past the newest gives back what was typed");

    // A reload re-attaches to the running command instead of killing it.
    // The command waits for a file the test writes once the page has re-attached, so a slow
    // machine cannot let it finish before the reload.
    await page.fill("#run-command", "echo one; until [ -e go-1 ]; do sleep 0.1; done; rm go-1; echo two");
    await page.click("#run-start");
    await page.locator("#run-output", { hasText: "one" }).waitFor();
    await page.reload();
    await page.locator("#run-status", { hasText: "Running in hello" }).waitFor();
    await page.locator("#run-output", { hasText: "one" }).waitFor();
    await putFile("go-1", "");
    await page.locator("#run-output", { hasText: "two" }).waitFor();
    await page.locator("#run-status.good", { hasText: "exit code 0" }).waitFor();
    if ((await page.textContent("#run-output")) !== "one\ntwo\n") fail("the re-attached output");

    // A second tab (signed in on its own: the key stays in each tab) follows it too.
    await page.fill("#run-command", "echo first-half; until [ -e go-2 ]; do sleep 0.1; done; rm go-2; echo second-half");
    await page.click("#run-start");
    await page.locator("#run-output", { hasText: "first-half" }).waitFor();
    const second = await context.newPage();
    second.on("pageerror", (error) => problems.push(`page error (second tab): ${error.message}`));
    await second.goto(`${url}/console#run`);
    await second.fill("#key", key);
    await second.click("#login-form button[type=submit]");
    await second.locator('nav a[data-page="run"]').click();
    await second.locator("#run-output", { hasText: "first-half" }).waitFor();
    await putFile("go-2", "");
    await second.locator("#run-output", { hasText: "second-half" }).waitFor();
    await second.locator("#run-status.good", { hasText: "exit code 0" }).waitFor();
    if ((await second.textContent("#run-output")) !== "first-half\nsecond-half\n") fail("the second tab's output");
    await second.close();
    await page.locator("#run-status.good", { hasText: "exit code 0" }).waitFor();

    // Stop cancels it.
    await page.fill("#run-command", "echo started; sleep 60");
    await page.click("#run-start");
    await page.locator("#run-output", { hasText: "started" }).waitFor();
    await page.click("#run-stop");
    await page.locator("#run-status.bad", { hasText: "Cancelled" }).waitFor();

    // A terminal.
    await page.click('nav a[data-page="terminal"]');
    await page.fill("#terminal-project", "hello");
    await page.click("#terminal-form button[type=submit]");
    await page.locator("#terminal-status", { hasText: "Connected" }).waitFor();
    await page.locator("#terminal .xterm-rows", { hasText: "#" }).or(page.locator("#terminal .xterm-rows", { hasText: "$" })).first().waitFor();
    await page.keyboard.type("echo $((6*7))");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll("#terminal .xterm-rows > div")].map((row) => row.textContent.trim());
      return rows.includes("42");
    });
    await shot("terminal");
    await page.keyboard.type("exit 3");
    await page.keyboard.press("Enter");
    await page.locator("#terminal-status", { hasText: "exited with 3" }).waitFor();

    // Files: folders, upload, download, replace with If-Match, a refused stale replace, delete.
    await page.click('nav a[data-page="files"]');
    await page.fill("#files-project", "hello");
    await page.click("#files-form button[type=submit]");
    await page.locator("#files tr", { hasText: "Makefile" }).waitFor();
    await page.locator("#files a.folder", { hasText: "src/" }).click();
    await page.locator("#files tr", { hasText: "hello.sh" }).waitFor();
    await page.locator("#files a.folder", { hasText: ".." }).click();
    await page.locator("#files tr", { hasText: "README.md" }).waitFor();
    const upload = (text) => page.setInputFiles("#files-upload", { name: "note.txt", mimeType: "text/plain", buffer: Buffer.from(text) });
    await upload("first\n");
    await page.locator("#files-status.good", { hasText: "Uploaded note.txt" }).waitFor();
    const [saved] = await Promise.all([
      page.waitForEvent("download"),
      page.locator('#files tr[data-name="note.txt"] button', { hasText: "Download" }).click(),
    ]);
    const savedPath = await saved.path();
    const { readFileSync } = await import("node:fs");
    if (readFileSync(savedPath, "utf8") !== "first\n") fail("the download's content");
    await upload("second\n");
    await page.locator("#files-status.good", { hasText: "Uploaded note.txt" }).waitFor();
    // Someone else changes it; a replacement based on what this page saw is refused. (The page
    // has seen the version once its download arrived.)
    await Promise.all([
      page.waitForEvent("download"),
      page.locator('#files tr[data-name="note.txt"] button', { hasText: "Download" }).click(),
    ]);
    const other = await fetch(`${url}/projects/hello/files/content?path=note.txt`, { method: "PUT", headers: { "X-API-Key": key }, body: "theirs\n" });
    if (!other.ok) fail(`the other writer: ${other.status}`);
    refusalExpected = 412;
    await upload("mine\n");
    await page.locator("#files-status.bad", { hasText: "changed since you looked" }).waitFor();
    refusalExpected = null;
    const kept = await fetch(`${url}/projects/hello/files/content?path=note.txt`, { headers: { "X-API-Key": key } });
    if ((await kept.text()) !== "theirs\n") fail("a stale replace overwrote the other writer's change");
    await shot("files");
    // A delete based on what this page saw is refused too once someone changed the file.
    await Promise.all([
      page.waitForEvent("download"),
      page.locator('#files tr[data-name="note.txt"] button', { hasText: "Download" }).click(),
    ]);
    await fetch(`${url}/projects/hello/files/content?path=note.txt`, { method: "PUT", headers: { "X-API-Key": key }, body: "again\n" });
    refusalExpected = 412;
    await page.locator('#files tr[data-name="note.txt"] button', { hasText: "Delete" }).click();
    await page.locator("#files-status.bad", { hasText: "not deleted" }).waitFor();
    refusalExpected = null;
    await page.locator('#files tr[data-name="note.txt"] button', { hasText: "Delete" }).click();
    await page.locator('#files tr[data-name="note.txt"]').waitFor({ state: "detached" });

    // Queue a command and follow it to its end.
    await page.click('nav a[data-page="run"]');
    await page.fill("#run-command", "echo queued-$((20+1))");
    await page.click("#run-queue");
    const row = page.locator("#queue tr", { hasText: "echo queued" });
    await row.filter({ hasText: "succeeded" }).waitFor();
    await row.click();
    // Each command says where it came from: the queue, a /shell run, a session.
    const shellRun = await apiCall("POST", "/projects/hello/shell", { command: "echo from-shell" });
    const session = await apiCall("POST", "/projects/hello/sessions", {});
    await apiCall("POST", `/sessions/${session.id}/shell`, { command: "echo from-session" });
    const origin = async (text) => {
      const cell = page.locator("#queue tr", { hasText: text }).locator("td").nth(1);
      await cell.waitFor();
      return cell.textContent();
    };
    for (const [text, expected] of [["echo queued", "queue"], ["echo from-shell", "shell"], ["echo from-session", "session"]]) {
      const shown = await origin(text);
      if (shown !== expected) fail(`the origin of ${text}: ${shown}`);
    }
    if (!shellRun.execution_id) fail("the /shell run");
    await page.locator("#queue-output", { hasText: "queued-21" }).waitFor();

    // A running command's output live beside the list, then cancelled from there.
    const live = await apiCall("POST", "/projects/hello/commands", { command: "echo live-1; sleep 60" });
    await page.locator(`#queue tr[data-id="${live.id}"]`, { hasText: "running" }).click();
    await page.locator("#queue-output", { hasText: "live-1" }).waitFor();
    await page.click("#queue-cancel");
    await page.locator("#queue-selected.bad", { hasText: "Cancelled" }).waitFor();
    if ((await statusOf(live.id)) !== "cancelled") fail("the cancel did not reach the command");
    await shot("queue");

    // Filters and paging: 46 more commands make a second page of 25 (and of the audit's 50).
    let last = null;
    for (let i = 0; i < 46; i++) last = await apiCall("POST", "/projects/hello/commands", { command: `true page-${i}` });
    await page.selectOption("#queue-status", "cancelled");
    await page.locator(`#queue tr[data-id="${live.id}"]`).waitFor();
    const shown = await page.locator("#queue tr").count();
    const cancelledOnly = await page.locator("#queue tr", { hasNotText: "cancelled" }).count();
    if (cancelledOnly !== 0) fail(`the status filter shows ${shown} rows, ${cancelledOnly} not cancelled`);
    await page.selectOption("#queue-status", "");
    await page.fill("#queue-project", "none-such");
    await page.locator("#queue-project").dispatchEvent("change");
    await page.locator("#queue tr").first().waitFor({ state: "detached" });
    await page.fill("#queue-project", "hello");
    await page.locator("#queue-project").dispatchEvent("change");
    await page.locator("#queue-next:not([disabled])").waitFor();
    await page.click("#queue-next");
    await page.locator("#queue tr", { hasText: "echo queued" }).waitFor();
    await page.click("#queue-first");
    await page.locator("#queue tr", { hasText: "true page-45" }).waitFor();
    while ((await statusOf(last.id)) !== "succeeded") await page.waitForTimeout(100);

    // The audit log holds the runs, 50 a page: the newest first, the first runs on the next.
    await page.click('nav a[data-page="audit"]');
    await page.locator("#audit tr", { hasText: "true page-45" }).waitFor();
    await page.locator("#audit-next:not([disabled])").waitFor();
    await page.click("#audit-next");
    await page.locator("#audit tr", { hasText: "echo hello; sleep 1; echo again" }).waitFor();
    await page.locator("#audit tr", { hasText: "terminal ended: shell exited with 3" }).waitFor();
    await page.locator("#audit tr", { hasText: "terminal opened" }).first().waitFor();
    await page.click("#audit-first");
    await page.locator("#audit tr", { hasText: "true page-45" }).waitFor();
    // A refusal says why it was refused.
    await page.click('nav a[data-page="run"]');
    await page.fill("#run-project", "nope");
    refusalExpected = 404;
    await page.click("#run-start");
    await page.locator("#run-status.bad", { hasText: "project not found" }).waitFor();
    refusalExpected = null;
    await page.fill("#run-project", "hello");
    await page.click('nav a[data-page="audit"]');
    await page.locator("#audit tr", { hasText: "NOT_FOUND: project not found" }).waitFor();
    // Filters: by outcome, project, key and time.
    await page.selectOption("#audit-outcome", "failed");
    await page.locator("#audit tr", { hasText: "exit 3" }).first().waitFor();
    if ((await page.locator("#audit tr", { hasNotText: "failed" }).count()) !== 0) fail("the outcome filter");
    await page.selectOption("#audit-outcome", "");
    await page.fill("#audit-project", "none-such");
    await page.click("#audit-filters button[type=submit]");
    await page.locator("#audit tr").first().waitFor({ state: "detached" });
    await page.fill("#audit-project", "hello");
    const keys = await apiCall("GET", "/api-keys");
    const admin = keys.api_keys.find((k) => k.scopes.includes("admin"));
    await page.fill("#audit-key", admin.id);
    await page.selectOption("#audit-since", "3600");
    await page.click("#audit-filters button[type=submit]");
    await page.locator("#audit tr", { hasText: "true page-45" }).waitFor();
    await page.fill("#audit-key", "00000000-0000-0000-0000-000000000000");
    await page.click("#audit-filters button[type=submit]");
    await page.locator("#audit tr").first().waitFor({ state: "detached" });
    await page.fill("#audit-key", "");
    await page.selectOption("#audit-since", "");
    await page.click("#audit-filters button[type=submit]");
    await page.locator("#audit tr", { hasText: "true page-45" }).waitFor();
    await shot("audit");

    // A key that may not list projects still runs commands in the project it names.
    const runner = await apiCall("POST", "/api-keys", { name: "console-runner", scopes: ["commands:execute", "commands:read"] });
    await page.click("#logout");
    refusalExpected = 403;
    await page.fill("#key", runner.key);
    await page.click("#login-form button[type=submit]");
    await page.locator("#projects-forbidden").waitFor();
    await page.click('nav a[data-page="run"]');
    await page.fill("#run-project", "hello");
    await page.fill("#run-command", "echo mine");
    await page.click("#run-start");
    await page.locator("#run-status.good", { hasText: "exit code 0" }).waitFor();
    await page.click("#logout");
    refusalExpected = null;

    const violations = await page.evaluate(() => window.__violations || []);
    problems.push(...violations.map((violation) => `CSP: ${violation}`));

    // 400 px wide: the header wraps and no page scrolls sideways.
    const narrow = await context.newPage();
    await narrow.setViewportSize({ width: 400, height: 800 });
    narrow.on("pageerror", (error) => problems.push(`page error (400 px): ${error.message}`));
    await narrow.goto(`${url}/console`);
    await fitsWidth(narrow, "login");
    await narrow.screenshot({ path: join(shots, "login-400.png"), fullPage: true });
    await narrow.fill("#key", key);
    await narrow.click("#login-form button[type=submit]");
    await narrow.locator("#projects tr", { hasText: "hello" }).waitFor();
    for (const name of PAGES) {
      await narrow.click(`nav a[data-page="${name}"]`);
      await narrow.locator(`#page-${name}:not([hidden])`).waitFor();
      if (name === "queue") await narrow.locator("#queue tr").first().waitFor();
      if (name === "audit") await narrow.locator("#audit tr").first().waitFor();
      await fitsWidth(narrow, name);
      await narrow.screenshot({ path: join(shots, `${name}-400.png`), fullPage: true });
    }
    const header = await narrow.evaluate(() => document.querySelector("header").getBoundingClientRect().height);
    if (header < 60) fail(`the header did not wrap at 400 px: ${header} px high`);
  } finally {
    await browser.close();
  }
  if (problems.length) fail(`the page reported problems:\n${problems.join("\n")}`);
  console.log(`console: every page works; screenshots in ${shots}`);
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
