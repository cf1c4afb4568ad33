// Runtime configuration, fetched rather than compiled in: one build of the app serves every
// installation, and the gateway (which already knows its identity provider) hands it out.

export type TokenToSend = "access_token" | "id_token";

export interface AppConfig {
  /** The identity provider's issuer URL (discovery is read from it). */
  authority: string;
  /** The app's public OAuth client id at that provider. */
  clientId: string;
  /** Where the gateway's GraphQL endpoint is, relative to this page or absolute. */
  graphqlUrl: string;
  scope: string;
  /** Paths on this app's origin; the provider must list origin + path exactly. */
  redirectPath: string;
  postLogoutPath: string;
  /** Which token Rowguard gets: access tokens where they are JWTs for the API, else ID tokens. */
  tokenToSend: TokenToSend;
  /** Auth0 only: the API identifier, sent as `audience` so the access token is a JWT for it. */
  audience: string | undefined;
  /** Claim holding the roles (dotted path), as ROWGUARD_OIDC_ROLES_CLAIM. Display only. */
  rolesClaim: string;
  /** Provider value → app role, as ROWGUARD_OIDC_ROLE_MAP. Display only. */
  roleMap: Record<string, string>;
}

const DEFAULT_ROLE_MAP = { clinician: "clinician", coordinator: "coordinator", auditor: "auditor" };

export async function loadConfig(): Promise<AppConfig> {
  // Relative to the app's base (/app/ in production), so the app can be mounted anywhere.
  const url = `${import.meta.env.BASE_URL}config.json`;
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const raw = (await response.json()) as Record<string, unknown>;

  const text = (key: string, fallback?: string): string => {
    const value = raw[key] ?? fallback;
    if (typeof value !== "string" || value === "") throw new Error(`${url}: "${key}" is required`);
    return value;
  };
  const tokenToSend = text("tokenToSend", "access_token");
  if (tokenToSend !== "access_token" && tokenToSend !== "id_token") {
    throw new Error(`${url}: "tokenToSend" must be "access_token" or "id_token"`);
  }
  const roleMap =
    raw.roleMap && typeof raw.roleMap === "object"
      ? (raw.roleMap as Record<string, string>)
      : typeof raw.roleMap === "string"
        ? parseRoleMap(raw.roleMap)
        : DEFAULT_ROLE_MAP;
  return {
    authority: text("authority"),
    clientId: text("clientId"),
    graphqlUrl: text("graphqlUrl", "/graphql"),
    scope: text("scope", "openid profile offline_access"),
    redirectPath: text("redirectPath", `${import.meta.env.BASE_URL}callback`),
    postLogoutPath: text("postLogoutPath", import.meta.env.BASE_URL),
    tokenToSend,
    audience: typeof raw.audience === "string" && raw.audience !== "" ? raw.audience : undefined,
    rolesClaim: text("rolesClaim", "roles"),
    roleMap,
  };
}

/** Accepts ROWGUARD_OIDC_ROLE_MAP's own syntax, so the value can be copied across verbatim. */
function parseRoleMap(text: string): Record<string, string> {
  const map: Record<string, string> = {};
  for (const pair of text.split(",")) {
    const [from, to] = pair.split("=").map((s) => s.trim());
    if (from && to) map[from] = to;
  }
  return map;
}
