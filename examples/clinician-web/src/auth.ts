// Sign-in with oidc-client-ts: authorization code + PKCE, tokens kept in sessionStorage (gone
// when the tab closes, not shared between tabs), renewed with refresh tokens before they expire.

import { UserManager, WebStorageStateStore, type User } from "oidc-client-ts";
import type { AppConfig } from "./config";

export type AppRole = "clinician" | "coordinator" | "auditor";

// Rowguard's precedence when a token grants several roles: clinician first.
const ROLE_PRECEDENCE: AppRole[] = ["clinician", "coordinator", "auditor"];

// A second UNAUTHENTICATED within this long after a fresh login means the gateway refuses the
// provider's tokens (wrong audience, issuer...): show that instead of bouncing forever.
const LOGIN_LOOP_WINDOW_MS = 30_000;
const LAST_LOGIN_KEY = "clinician-web:last-login";

interface LoginState {
  /** The in-app location (hash) to come back to after the provider's redirect. */
  returnTo: string;
}

export class Auth {
  readonly manager: UserManager;
  private readonly config: AppConfig;
  private redirecting = false;

  constructor(config: AppConfig) {
    this.config = config;
    const origin = window.location.origin;
    this.manager = new UserManager({
      authority: config.authority,
      client_id: config.clientId,
      redirect_uri: origin + config.redirectPath,
      post_logout_redirect_uri: origin + config.postLogoutPath,
      response_type: "code", // oidc-client-ts always adds PKCE (S256) to the code flow
      scope: config.scope,
      // With a refresh token (offline_access) renewal is a plain POST to the token endpoint: no
      // hidden iframe, so it works with providers that forbid framing and with third-party
      // cookies blocked.
      automaticSilentRenew: true,
      userStore: new WebStorageStateStore({ store: window.sessionStorage }),
      // The PKCE verifier and state of a login in progress, too: only the tab that started the
      // login needs them (the default would leave them in localStorage).
      stateStore: new WebStorageStateStore({ store: window.sessionStorage }),
      // Auth0 mints a JWT access token only for a named API; others need no extra parameter.
      extraQueryParams: config.audience ? { audience: config.audience } : undefined,
      monitorSession: false,
      loadUserInfo: false,
    });
  }

  /** True when this page load is the provider redirecting back with a code. */
  isCallback(): boolean {
    const callback = new URL(this.config.redirectPath, window.location.origin);
    return window.location.pathname === callback.pathname;
  }

  /** Redeems the code, then puts the address bar back where the user was. */
  async completeLogin(): Promise<void> {
    const user = await this.manager.signinRedirectCallback();
    sessionStorage.setItem(LAST_LOGIN_KEY, String(Date.now()));
    const state = user.state as LoginState | undefined;
    window.history.replaceState(null, "", import.meta.env.BASE_URL + (state?.returnTo ?? ""));
  }

  login(): Promise<void> {
    const state: LoginState = { returnTo: window.location.hash };
    return this.manager.signinRedirect({ state });
  }

  /**
   * Starts a new login after the gateway said UNAUTHENTICATED, unless one just happened:
   * returns false then, so the caller shows the error instead of looping.
   */
  loginAgain(): boolean {
    const last = Number(sessionStorage.getItem(LAST_LOGIN_KEY) ?? 0);
    if (Date.now() - last < LOGIN_LOOP_WINDOW_MS) return false;
    // Several requests in flight fail together; one redirect is enough.
    if (!this.redirecting) {
      this.redirecting = true;
      void this.manager.removeUser().then(() => this.login());
    }
    return true;
  }

  async logout(): Promise<void> {
    const user = await this.manager.getUser();
    const endSession = await this.manager.metadataService.getEndSessionEndpoint().catch(() => undefined);
    sessionStorage.removeItem(LAST_LOGIN_KEY);
    if (!endSession) {
      // Nothing to tell the provider: forgetting the tokens is all a logout can do here.
      await this.manager.removeUser();
      window.location.assign(window.location.origin + this.config.postLogoutPath);
      return;
    }
    // id_token_hint lets the provider skip its "do you want to sign out?" page.
    await this.manager.signoutRedirect({ id_token_hint: user?.id_token });
  }

  /** The signed-in user, if their tokens are still usable. */
  async user(): Promise<User | null> {
    const user = await this.manager.getUser();
    if (!user || !user.expired) return user;
    // Renewal may have lost a race with a sleeping laptop; one more try before giving up.
    try {
      return await this.manager.signinSilent();
    } catch {
      return null;
    }
  }

  /** The bearer token Rowguard should get, per `tokenToSend`. */
  async token(): Promise<string | undefined> {
    const user = await this.user();
    if (!user) return undefined;
    return this.config.tokenToSend === "id_token" ? user.id_token : user.access_token;
  }

  /**
   * The app role Rowguard will derive from the token we send, computed the same way (roles
   * claim, role map, precedence). Only for choosing what to show: the gateway and the database
   * enforce the role whatever the UI believes.
   */
  role(user: User): AppRole | undefined {
    const token = this.config.tokenToSend === "id_token" ? user.id_token : user.access_token;
    // Opaque access tokens carry no claims the app can read; the ID token's then.
    const claims = (token ? decodeJwtPayload(token) : undefined) ?? (user.profile as Record<string, unknown>);
    const granted = new Set(
      claimValues(claims, this.config.rolesClaim)
        .map((value) => this.config.roleMap[value])
        .filter(Boolean),
    );
    return ROLE_PRECEDENCE.find((role) => granted.has(role));
  }
}

function decodeJwtPayload(token: string): Record<string, unknown> | undefined {
  const [, payload, , extra] = token.split(".");
  if (!payload || extra !== undefined) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** The claim's values: a whole dotted name first (Auth0 namespaces), else a path. */
function claimValues(claims: Record<string, unknown>, path: string): string[] {
  let value: unknown = claims[path];
  if (value === undefined) {
    value = path.split(".").reduce<unknown>(
      (node, key) => (node && typeof node === "object" ? (node as Record<string, unknown>)[key] : undefined),
      claims,
    );
  }
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  if (typeof value === "string") return value.split(/\s+/).filter(Boolean);
  return [];
}
