// Opens the Rowguard playground in headless Chromium with every non-loopback request blocked,
// enters a bearer token, runs `{ me { displayName } }` and waits for the expected name.
// Usage: node playground.mjs <gateway-url> <token> <expected-text>
// Prints one JSON line; exits 0 only if the name appeared and nothing left loopback.
import { chromium } from "playwright-core";

const [base, token, expected] = process.argv.slice(2);
const loopback = new Set(["127.0.0.1", "localhost", "[::1]"]);
const leaked = [];
const cspViolations = [];
const pageErrors = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Belt and braces: no name but loopback resolves, so nothing could load from elsewhere.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
  ],
});
let ok = false;
let text = "";
try {
  const page = await browser.newPage();
  await page.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (loopback.has(url.hostname)) return route.continue();
    leaked.push(url.href);
    return route.abort();
  });
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) cspViolations.push(message.text());
  });
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  const query = encodeURIComponent("{ me { displayName } }");
  await page.goto(`${base}/graphql?query=${query}`, { waitUntil: "load" });
  await page.fill("#token", token);
  await page.click(".graphiql-execute-button", { timeout: 20000 });
  await page.waitForFunction(
    (want) => (document.querySelector(".graphiql-response")?.textContent || "").includes(want),
    expected,
    { timeout: 20000 },
  );
  text = await page.evaluate(() => document.querySelector(".graphiql-response")?.textContent || "");
  ok = leaked.length === 0;
} catch (error) {
  pageErrors.push(String(error));
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ok, leaked, cspViolations, pageErrors, response: text.slice(0, 500) }));
process.exit(ok ? 0 : 1);
