// Start-up: configuration, then the login redirect if this is one, then either the signed-out
// page or the app. Screens are chosen by the URL hash (#/ or #/patients/<id>) so a reload
// (or a login round trip) comes back to the same patient.

import "./style.css";
import type { User } from "oidc-client-ts";
import { createClient } from "./apollo";
import { Auth } from "./auth";
import { loadConfig, type AppConfig } from "./config";
import { fill, h } from "./dom";
import { problem, userMessage, type Problem } from "./errors";
import { MeDocument } from "./generated/graphql";
import type { AppContext } from "./views/context";
import { PatientDetail } from "./views/patient-detail";
import { PatientList } from "./views/patient-list";

const root = document.getElementById("app")!;

async function start(): Promise<void> {
  let config: AppConfig;
  try {
    config = await loadConfig();
  } catch (error) {
    fill(root, h("p", { testid: "error-message", class: "error" }, `Cannot load the app's configuration: ${String(error)}`));
    return;
  }
  const auth = new Auth(config);

  if (auth.isCallback()) {
    try {
      await auth.completeLogin();
    } catch (error) {
      // A stale or replayed callback URL (back button, bookmark): start over cleanly.
      window.history.replaceState(null, "", import.meta.env.BASE_URL);
      signedOut(auth, `Login did not complete: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
  }

  const user = await auth.user();
  if (!user) {
    signedOut(auth);
    return;
  }
  signedIn(config, auth, user);
}

function signedOut(auth: Auth, message?: string): void {
  fill(
    root,
    h(
      "header",
      { class: "bar" },
      h("h1", {}, "Rowguard — Clinician"),
      h("button", { testid: "login-button", type: "button", textContent: "Log in", on: { click: () => void auth.login() } }),
    ),
    message && h("p", { testid: "error-message", class: "error" }, message),
    h("main", {}, h("p", {}, "Log in with your organisation's account to see your patients.")),
  );
}

function signedIn(config: AppConfig, auth: Auth, user: User): void {
  const errorBanner = h("p", { testid: "error-message", class: "error", role: "alert", hidden: true });
  const userName = h("span", { testid: "user-name" }, "…");
  const role = auth.role(user);
  const main = h("main");

  const report = (p: Problem) => {
    if (p.code === "UNAUTHENTICATED" && auth.loginAgain()) {
      errorBanner.textContent = "Your session has ended; signing you in again…";
    } else {
      errorBanner.textContent = userMessage(p);
    }
    errorBanner.dataset.code = p.code;
    errorBanner.hidden = false;
  };
  const ctx: AppContext = {
    client: createClient(config, auth),
    role,
    fail: (error) => {
      console.error(error);
      report(problem(error));
    },
    report,
    clearError: () => {
      errorBanner.hidden = true;
      errorBanner.textContent = "";
      delete errorBanner.dataset.code;
    },
  };

  // Refresh-token renewal failed (revoked, session ended at the provider): say so instead of
  // letting the next request fail mysteriously.
  auth.manager.events.addSilentRenewError(() => {
    errorBanner.textContent = "Your session has ended. Log in again to continue.";
    errorBanner.hidden = false;
  });

  fill(
    root,
    h(
      "header",
      { class: "bar" },
      h("h1", {}, "Rowguard — Clinician"),
      h(
        "div",
        { class: "who" },
        userName,
        h("span", { testid: "user-role", class: "role" }, role ?? "no role"),
        h("button", { testid: "logout-button", type: "button", textContent: "Log out", on: { click: () => void auth.logout() } }),
      ),
    ),
    errorBanner,
    main,
  );

  const list = new PatientList(ctx, (id) => {
    window.location.hash = `#/patients/${encodeURIComponent(id)}`;
  });
  const detail = new PatientDetail(ctx);
  let listLoaded = false;

  const route = () => {
    const match = /^#\/patients\/(.+)$/.exec(window.location.hash);
    ctx.clearError();
    if (match) {
      fill(main, detail.element);
      void detail.open(decodeURIComponent(match[1] ?? ""));
    } else {
      fill(main, list.element);
      // Coming back keeps the page and search the user left.
      if (!listLoaded) {
        listLoaded = true;
        void list.load();
      }
    }
  };

  // Who Rowguard thinks this is: a valid token for someone not enrolled gives `me: null`.
  ctx.client
    .query({ query: MeDocument })
    .then(({ data }) => {
      if (data?.me) {
        userName.textContent = data.me.displayName;
        return;
      }
      // Not an error of one request, so not in the banner that the next success clears.
      userName.textContent = user.profile.name ?? user.profile.sub;
      errorBanner.before(
        h("p", { testid: "not-enrolled", class: "error" }, "Your account is not enrolled in Rowguard. Ask a coordinator to enrol you."),
      );
    })
    .catch(ctx.fail);

  window.addEventListener("hashchange", route);
  route();
}

void start();
