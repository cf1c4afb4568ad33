// Fails when persisted-query-manifest.json is not what `npm run manifest` would write from
// src/operations today. The gateway trusts that file (and, in enforce mode, nothing else), so a
// stale one means the app would send ids production refuses.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { generatePersistedQueryManifest } from "@apollo/generate-persisted-query-manifest";

const configPath = resolve("persisted-query-manifest.config.json");
const config = JSON.parse(readFileSync(configPath, "utf8"));
const committedPath = resolve(config.output);

// The CLI writes JSON.stringify(manifest, null, 2); regenerate the same text in memory.
const expected = JSON.stringify(await generatePersistedQueryManifest(config, configPath), null, 2);
let committed;
try {
  committed = readFileSync(committedPath, "utf8");
} catch {
  console.error(`${config.output} is missing: run npm run manifest and commit it.`);
  process.exit(1);
}
if (committed.trimEnd() !== expected.trimEnd()) {
  const names = (text) => {
    try {
      return new Map(JSON.parse(text).operations.map((o) => [o.name, o.id]));
    } catch {
      return new Map();
    }
  };
  const before = names(committed);
  const after = names(expected);
  const changed = [...new Set([...before.keys(), ...after.keys()])].filter((n) => before.get(n) !== after.get(n));
  console.error(
    `${config.output} is out of date (${changed.join(", ") || "formatting"}): run npm run manifest and commit it.`,
  );
  process.exit(1);
}
console.log(`${config.output} matches src/operations (${JSON.parse(expected).operations.length} operations).`);
