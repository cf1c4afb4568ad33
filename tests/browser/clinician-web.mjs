// Drives the reference clinician web app (examples/clinician-web) in headless Chromium against a
// running `rowguard dev`, through its dev identity provider's real login redirects, and proves:
//
//   1. OIDC authorization code + PKCE works end to end: "Log in" → provider page → back signed
//      in as alice, her name (from `me`) and role in the header.
//   2. Row-level security reaches the screen unchanged: paging through "My patients" with the
//      app's own controls yields exactly the MRNs alice may see (ALICE_MRNS), no more, no fewer.
//   3. A clinician can edit and save clinical notes.
//   4. Optimistic concurrency protects concurrent edits: two sessions as alice edit the same
//      patient, the second save gets CONFLICT, the app shows the other person's newer text while
//      keeping the draft, and "Retry with my text" saves the draft on top of the new version
//      (a reload shows it persisted).
//   5. Logout works, and a coordinator (carol), who sees every patient's demographics, is shown
//      no clinical notes anywhere: none of the texts saved above appears on her page.
//
// Every request to a host other than loopback is aborted and fails the run: the app must not
// depend on, or leak anything to, the outside world (CDNs, fonts, analytics).
//
// Usage: APP_URL=http://127.0.0.1:8080/app/ ALICE_MRNS=DEMO-0001,... node clinician-web.mjs
// Prints one JSON summary line; exits 0 only if every step passed and nothing left loopback.
import { chromium } from "playwright-core";

const APP_URL = process.env.APP_URL;
const ALICE_MRNS = (process.env.ALICE_MRNS || "")
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
if (!APP_URL || ALICE_MRNS.length === 0) {
  console.error("APP_URL and ALICE_MRNS (comma-separated) are required");
  process.exit(2);
}
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 30_000);
const ACTION_TIMEOUT_MS = Math.min(STEP_TIMEOUT_MS, 30_000);

const loopback = new Set(["127.0.0.1", "localhost", "[::1]"]);
const leaked = [];
const pageErrors = [];
/** Every /graphql response body, by session label, to check what reached the browser. */
const graphqlBodies = [];
/** The demo users' display names (dev's seed): a sign-in must show the enrolled person, not a fallback. */
const DISPLAY_NAMES = { alice: "Dr. Alice Nguyen", carol: "Carol Reyes (coordinator)" };
const steps = [];
const facts = {};
const tag = `${Date.now().toString(36)}-${process.pid}`;
const texts = {
  first: `Browser test note ${tag}: first save`,
  draftA: `Browser test note ${tag}: session A draft`,
  savedB: `Browser test note ${tag}: session B save`,
};

class StepFailure extends Error {}
function assert(condition, message) {
  if (!condition) throw new StepFailure(message);
}

async function step(name, fn) {
  const started = Date.now();
  let timer;
  try {
    await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new StepFailure(`timed out after ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
      }),
    ]);
  } catch (error) {
    steps.push({ name, ok: false, ms: Date.now() - started });
    throw Object.assign(error instanceof Error ? error : new Error(String(error)), { step: name });
  } finally {
    clearTimeout(timer);
  }
  steps.push({ name, ok: true, ms: Date.now() - started });
}

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

/** A fresh browser session (own cookies and sessionStorage) with the loopback-only guard. */
async function session(label) {
  const context = await browser.newContext();
  context.setDefaultTimeout(ACTION_TIMEOUT_MS);
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.protocol === "data:" || url.protocol === "blob:" || loopback.has(url.hostname)) {
      return route.continue();
    }
    leaked.push(url.href);
    return route.abort();
  });
  // route() sees only the first URL of a redirect chain; every hop is a request event.
  context.on("request", (request) => {
    const url = new URL(request.url());
    if (!(url.protocol === "data:" || url.protocol === "blob:" || loopback.has(url.hostname))) {
      leaked.push(url.href);
    }
  });
  context.on("response", async (response) => {
    if (new URL(response.url()).pathname !== "/graphql") return;
    try {
      graphqlBodies.push({ label: currentUser, text: await response.text() });
    } catch {
      // A preflight or an aborted request has no body.
    }
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => pageErrors.push(`${label}: ${error}`));
  return { context, page };
}

const byTestId = (id) => `[data-testid="${id}"]`;

/** From the app's signed-out page through the provider's login page, back signed in. */
/** Who the session being driven is signed in as (labels the captured responses). */
let currentUser = null;

async function logIn(page, subject, expectedRole) {
  currentUser = subject;
  await page.click(byTestId("login-button"));
  // The provider's page (another origin): pick the demo user.
  await page.click(byTestId(`login-as-${subject}`));
  await page.waitForFunction(
    (sel) => {
      const text = document.querySelector(sel)?.textContent || "";
      return text !== "" && text !== "…";
    },
    byTestId("user-name"),
  );
  const landed = new URL(page.url());
  assert(
    page.url().startsWith(APP_URL) && !landed.search.includes("code="),
    `after login the address is ${page.url()}, not the app with the code removed`,
  );
  const name = (await page.textContent(byTestId("user-name"))).trim();
  const role = (await page.textContent(byTestId("user-role"))).trim();
  assert(
    name === DISPLAY_NAMES[subject],
    `signed in as ${subject}, but the header names ${JSON.stringify(name)} (not the enrolled ${DISPLAY_NAMES[subject]})`,
  );
  assert(!(await page.$(byTestId("not-enrolled"))), `${subject} is signed in but not enrolled`);
  assert(role === expectedRole, `${subject} should be a ${expectedRole}, the header says ${JSON.stringify(role)}`);
  const banner = await page.$(`${byTestId("error-message")}:visible`);
  assert(!banner, `error after login: ${banner && (await banner.textContent())}`);
  return name;
}

async function listReady(page) {
  await page.waitForSelector(`${byTestId("patient-list")}[data-state="ready"]`);
}

async function detailReady(page) {
  await page.waitForSelector(`${byTestId("patient-detail")}[data-state="ready"]`);
  const banner = await page.$(`${byTestId("error-message")}:visible`);
  assert(!banner, `error opening the patient: ${banner && (await banner.textContent())}`);
}

async function notesValue(page) {
  return page.inputValue(byTestId("notes-textarea"));
}

let ok = false;
let failure = null;
const a = await session("A");
let b;
try {
  await step("1. log in as alice", async () => {
    await a.page.goto(APP_URL, { waitUntil: "load" });
    facts.aliceName = await logIn(a.page, "alice", "clinician");
  });

  await step("2. alice's patients across all pages equal ALICE_MRNS", async () => {
    const seen = [];
    let pages = 0;
    for (;;) {
      await listReady(a.page);
      pages += 1;
      assert(pages <= 100, "more than 100 pages: next-page never disables");
      const mrns = await a.page.$$eval(byTestId("patient-row"), (rows) => rows.map((r) => r.dataset.mrn));
      assert(mrns.length > 0, `page ${pages} is empty`);
      seen.push(...mrns);
      if (await a.page.isDisabled(byTestId("next-page"))) break;
      await a.page.click(byTestId("next-page"));
    }
    const duplicates = seen.filter((m, i) => seen.indexOf(m) !== i);
    assert(duplicates.length === 0, `MRNs listed twice across pages: ${duplicates.join(", ")}`);
    const expected = new Set(ALICE_MRNS);
    const extra = seen.filter((m) => !expected.has(m));
    const missing = ALICE_MRNS.filter((m) => !seen.includes(m));
    assert(
      extra.length === 0 && missing.length === 0,
      `alice's list differs from ALICE_MRNS: extra [${extra.join(", ")}], missing [${missing.join(", ")}]`,
    );
    facts.pages = pages;
    facts.patients = seen.length;
    // Back to the first page with the app's own control, proving "previous" works too.
    for (let i = 1; i < pages; i++) {
      await a.page.click(byTestId("prev-page"));
      await listReady(a.page);
    }
    const first = await a.page.$eval(byTestId("patient-row"), (r) => r.dataset.mrn);
    assert(first === seen[0], `previous-page did not lead back to the first page (${first} vs ${seen[0]})`);
  });

  await step("3. edit and save clinical notes", async () => {
    const row = await a.page.$(byTestId("patient-row"));
    facts.mrn = await row.getAttribute("data-mrn");
    await row.click();
    await detailReady(a.page);
    facts.patientId = await a.page.getAttribute(byTestId("patient-detail"), "data-id");
    const shownMrn = (await a.page.textContent(byTestId("patient-mrn"))).trim();
    assert(shownMrn === facts.mrn, `opened ${shownMrn}, clicked ${facts.mrn}`);
    await a.page.fill(byTestId("notes-textarea"), texts.first);
    await a.page.click(byTestId("save-notes"));
    await a.page.waitForSelector(byTestId("saved-message"));
  });

  await step("4a. second session as alice opens the same patient", async () => {
    b = await session("B");
    await b.page.goto(APP_URL, { waitUntil: "load" });
    await logIn(b.page, "alice", "clinician");
    await b.page.goto(`${APP_URL}#/patients/${encodeURIComponent(facts.patientId)}`);
    await detailReady(b.page);
    const value = await notesValue(b.page);
    assert(value === texts.first, `session B should read the first save, read ${JSON.stringify(value)}`);
  });

  await step("4b. concurrent edit: CONFLICT, newer text shown, draft kept, retry saves it", async () => {
    // A starts typing (unsaved) while B saves something else.
    await a.page.fill(byTestId("notes-textarea"), texts.draftA);
    await b.page.fill(byTestId("notes-textarea"), texts.savedB);
    await b.page.click(byTestId("save-notes"));
    await b.page.waitForSelector(byTestId("saved-message"));

    await a.page.click(byTestId("save-notes"));
    await a.page.waitForSelector(byTestId("conflict-message"));
    const message = await a.page.textContent(byTestId("conflict-message"));
    assert(
      message.includes("This patient was changed by someone else"),
      `conflict message reads ${JSON.stringify(message)}`,
    );
    assert(message.includes(texts.savedB), "the conflict message does not show the other session's newer notes");
    assert((await notesValue(a.page)) === texts.draftA, "the draft was not kept in the editor after the conflict");
    assert(!(await a.page.$(byTestId("saved-message"))), "a saved message is shown although the save conflicted");

    await a.page.click(byTestId("retry-save"));
    await a.page.waitForSelector(byTestId("saved-message"));
    assert(!(await a.page.$(byTestId("conflict-message"))), "the conflict message stayed after the retry saved");

    await a.page.reload({ waitUntil: "load" });
    await detailReady(a.page);
    const persisted = await notesValue(a.page);
    assert(persisted === texts.draftA, `after reload the notes read ${JSON.stringify(persisted)}, not the retried draft`);
    await b.page.reload({ waitUntil: "load" });
    await detailReady(b.page);
    assert((await notesValue(b.page)) === texts.draftA, "session B does not see the retried draft after reload");
  });

  await step("5a. log out", async () => {
    await a.page.click(byTestId("logout-button"));
    await a.page.waitForSelector(byTestId("login-button"));
    assert(a.page.url().startsWith(APP_URL), `logout ended at ${a.page.url()}, not the app`);
    assert(!(await a.page.$(byTestId("user-name"))), "still showing a signed-in user after logout");
  });

  await step("5b. log in as carol (coordinator)", async () => {
    await logIn(a.page, "carol", "coordinator");
    await listReady(a.page);
  });

  await step("5c. carol opens the patient and sees no clinical notes", async () => {
    // Find the same patient through the search box (coordinators see every patient).
    await a.page.fill(byTestId("search-input"), facts.mrn);
    await a.page.waitForFunction(
      ([rowSel, listSel, mrn]) => {
        const rows = [...document.querySelectorAll(rowSel)];
        return (
          document.querySelector(listSel)?.dataset.state === "ready" &&
          rows.length > 0 &&
          rows.every((r) => r.dataset.mrn === mrn)
        );
      },
      [byTestId("patient-row"), byTestId("patient-list"), facts.mrn],
    );
    await a.page.click(`${byTestId("patient-row")}[data-mrn="${facts.mrn}"]`);
    await detailReady(a.page);
    await a.page.waitForSelector(byTestId("care-team"));
    assert(await a.page.$(byTestId("assign-select")), "a coordinator should see the assign-clinician control");

    const pageText = await a.page.evaluate(() => `${document.body.innerText}\n${document.body.textContent}`);
    for (const [label, text] of Object.entries(texts)) {
      assert(!pageText.includes(text), `the coordinator's page shows clinical notes (${label})`);
    }
    const textarea = await a.page.$(byTestId("notes-textarea"));
    if (textarea) {
      // A textarea's value is not in innerText/textContent: check it directly.
      assert((await textarea.inputValue()) === "", "the notes textarea holds text for a coordinator");
    }
    // Not only the screen: no response carol's session received carries notes.
    const carols = graphqlBodies.filter((b) => b.label === "carol");
    assert(carols.length > 0, "no GraphQL responses were captured for carol");
    for (const { text } of carols) {
      assert(!/"clinicalNotes"\s*:\s*"/.test(text), `a response to carol carries clinical notes: ${text.slice(0, 200)}`);
      for (const [label, note] of Object.entries(texts)) {
        assert(!text.includes(note), `a response to carol carries the ${label} note text`);
      }
    }
    facts.coordinatorNotesEditor = textarea ? "present-empty" : "absent";
  });

  assert(leaked.length === 0, `requests left loopback: ${leaked.join(", ")}`);
  assert(pageErrors.length === 0, `uncaught errors in the page: ${pageErrors.join(" | ")}`);
  ok = true;
} catch (error) {
  failure = { step: error.step ?? null, message: String(error.message ?? error) };
  console.error(`clinician-web: FAILED${error.step ? ` at "${error.step}"` : ""}: ${failure.message}`);
  if (!(error instanceof StepFailure) && error.stack) console.error(error.stack);
} finally {
  await browser.close();
}
ok = ok && leaked.length === 0;
console.log(JSON.stringify({ ok, steps, facts, leaked, pageErrors, failure }));
process.exit(ok ? 0 : 1);
