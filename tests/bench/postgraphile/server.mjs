// PostGraphile 5 as the benchmark's peer: the same database, the same row level security
// policies, the same identity settings as Rowguard's identity statement, from a token verified
// against the same issuer (signature, issuer, audience, expiry; verified tokens cached, as
// Rowguard caches them). It serves the caller's patients through a security_invoker view.
//
// Environment: DATABASE_URL (the gateway login), PORT, ISSUER, AUDIENCE.

import { createServer } from "node:http";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const { DATABASE_URL, PORT, ISSUER, AUDIENCE } = process.env;
const discovery = await (await fetch(`${ISSUER.replace(/\/$/, "")}/.well-known/openid-configuration`)).json();
const keys = createRemoteJWKSet(new URL(discovery.jwks_uri));
const verified = new Map();

async function identity(authorization) {
  const token = authorization?.startsWith("Bearer ") ? authorization.slice(7) : null;
  if (!token) return null;
  const cached = verified.get(token);
  if (cached && cached.exp * 1000 > Date.now()) return cached;
  const { payload } = await jwtVerify(token, keys, { issuer: ISSUER, audience: AUDIENCE });
  verified.set(token, payload);
  return payload;
}

const preset = {
  extends: [PostGraphileAmberPreset],
  // The gateway login holds no table privileges (Rowguard's self-check demands it); the schema is
  // built from the view itself, and PostgreSQL decides access per request as the caller's role.
  disablePlugins: ["PgRBACPlugin"],
  pgServices: [makePgService({ connectionString: DATABASE_URL, schemas: ["rowguard_bench"], poolConfig: { max: Number(process.env.POOL ?? 8) } })],
  grafast: {
    async context(requestContext) {
      const payload = await identity(requestContext.node?.req?.headers?.authorization);
      if (!payload) return { pgSettings: { role: "rowguard_gateway" } };
      return {
        pgSettings: {
          role: "rowguard_clinician",
          // The dataset's clinician-N is enrolled with id N (Rowguard looks it up in the same
          // statement; PostGraphile is given it for free).
          "app.current_user": String(payload.sub).replace("clinician-", ""),
          "app.issuer": payload.iss,
          "app.subject": payload.sub,
          statement_timeout: "5000",
          transaction_read_only: "on",
        },
      };
    },
  },
  grafserv: { port: Number(PORT), graphiql: false, watch: false },
};

const pgl = postgraphile(preset);
const serv = pgl.createServ(grafserv);
const server = createServer();
serv.addTo(server).catch((e) => {
  console.error(e);
  process.exit(1);
});
server.listen(Number(PORT), "127.0.0.1", () => console.log(`postgraphile listening on ${PORT}`));
