// The web console in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Signs in with a key, sees the projects, runs a command and watches its output arrive, types
// into a terminal, follows a queued command and reads the audit log; a screenshot of each page.
// Any Content-Security-Policy violation or console error on the way fails it.
//
//   RDEV_URL          the server (http://127.0.0.1:PORT)
//   RDEV_KEY          an admin key
//   RDEV_SCREENSHOTS  the folder the screenshots go to
//   RDEV_CHROMIUM     the browser (default /usr/bin/chromium)
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.RDEV_URL;
const key = process.env.RDEV_KEY;
const shots = process.env.RDEV_SCREENSHOTS;
const TIMEOUT = 15_000;

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
  // While the wrong key is tried, the browser logs the 401 it gets: that one is expected.
  let refusalExpected = false;
  try {
    const page = await browser.newPage({ viewport: { width: 1366, height: 820 } });
    page.setDefaultTimeout(TIMEOUT);
    page.on("console", (message) => {
      const expected = refusalExpected && message.text().includes("status of 401");
      if (message.type() === "error" && !expected) problems.push(`console: ${message.text()}`);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
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
    await shot("login");
    refusalExpected = true;
    await page.fill("#key", "rdev_not-a-key");
    await page.click("#login-form button[type=submit]");
    await page.locator("#login-error").filter({ hasText: "malformed" }).waitFor();
    refusalExpected = false;
    await page.fill("#key", key);
    await page.click("#login-form button[type=submit]");

    // Projects.
    await page.locator("#projects tr", { hasText: "hello" }).waitFor();
    const stored = await page.evaluate(() => [sessionStorage.getItem("rdev-api-key"), localStorage.length]);
    if (stored[0] !== key || stored[1] !== 0) fail(`the key is not (only) in sessionStorage: ${stored}`);
    await shot("projects");

    // Run a command: its first line shows while it still runs.
    await page.click('nav a[data-page="run"]');
    await page.selectOption("#run-project", "hello");
    await page.fill("#run-command", "echo hello; sleep 1; echo again");
    await page.click("#run-form button[type=submit]");
    await page.locator("#run-output", { hasText: "hello" }).waitFor();
    const early = await page.evaluate(() => [
      document.getElementById("run-output").textContent,
      document.getElementById("run-status").textContent,
    ]);
    if (early[0].includes("again") || !early[1].startsWith("Running")) fail(`output did not arrive live: ${early}`);
    await page.locator("#run-status", { hasText: "exit code 0" }).waitFor();
    const output = await page.textContent("#run-output");
    if (output !== "hello\nagain\n") fail(`run output: ${JSON.stringify(output)}`);
    await shot("run");

    // A terminal.
    await page.click('nav a[data-page="terminal"]');
    await page.selectOption("#terminal-project", "hello");
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

    // Queue a command and follow it to its end.
    await page.click('nav a[data-page="run"]');
    await page.fill("#run-command", "echo queued-$((20+1))");
    await page.click("#run-queue");
    const row = page.locator("#queue tr", { hasText: "echo queued" });
    await row.filter({ hasText: "succeeded" }).waitFor();
    await row.click();
    await page.locator("#queue-output", { hasText: "queued-21" }).waitFor();
    await shot("queue");

    // The audit log holds the runs.
    await page.click('nav a[data-page="audit"]');
    await page.locator("#audit tr", { hasText: "echo hello; sleep 1; echo again" }).waitFor();
    await page.locator("#audit tr", { hasText: "terminal ended: shell exited with 3" }).waitFor();
    await page.locator("#audit tr", { hasText: "terminal opened" }).first().waitFor();
    await shot("audit");

    const violations = await page.evaluate(() => window.__violations || []);
    problems.push(...violations.map((violation) => `CSP: ${violation}`));
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
