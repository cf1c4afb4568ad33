// `npm run dev` serves the app at http://localhost:5173/app/ and forwards the two things that
// come from the gateway (its GraphQL endpoint and the runtime config.json naming its identity
// provider), so the browser sees one origin, as in production.
import { defineConfig } from "vite";

const gateway = process.env.ROWGUARD_URL || "http://127.0.0.1:8080";

export default defineConfig({
  base: "/app/",
  server: {
    host: "localhost",
    port: 5173,
    // The identity provider allows exactly http://localhost:5173/app/callback: another port
    // would fail at login, so refuse to start on one.
    strictPort: true,
    proxy: {
      "/graphql": { target: gateway },
      "/app/config.json": { target: gateway },
    },
  },
  build: {
    outDir: "dist",
    sourcemap: true,
  },
});
