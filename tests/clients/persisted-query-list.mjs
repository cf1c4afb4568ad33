// Apollo Client with a persisted-query list, as a front end built against Rowguard's trusted
// documents would run it: operations are sent by the id the manifest gives their name (never
// their text). Prints one JSON line per operation: {name, data, errors}.
//
// Usage: node persisted-query-list.mjs URL MANIFEST OPERATION_FILE... (token in ROWGUARD_TOKEN)

import { readFileSync } from "node:fs";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { generatePersistedQueryIdsFromManifest } from "@apollo/persisted-query-lists";

const [url, manifestPath, ...operationFiles] = process.argv.slice(2);
const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
const sent = [];

const client = new ApolloClient({
  cache: new InMemoryCache(),
  link: new PersistedQueryLink(
    generatePersistedQueryIdsFromManifest({ loadManifest: () => manifest }),
  ).concat(
    new HttpLink({
      uri: url,
      headers: { authorization: `Bearer ${process.env.ROWGUARD_TOKEN}` },
      fetch: async (input, init) => {
        sent.push(JSON.parse(init.body));
        return fetch(input, init);
      },
    }),
  ),
});

for (const file of operationFiles) {
  const document = gql(readFileSync(file, "utf8"));
  const name = document.definitions.find((d) => d.kind === "OperationDefinition").name.value;
  try {
    const result = await client.query({ query: document, fetchPolicy: "network-only" });
    console.log(JSON.stringify({ name, data: result.data ?? null, errors: result.error ? [result.error.message] : [] }));
  } catch (error) {
    console.log(JSON.stringify({ name, data: null, errors: [String(error.message ?? error)] }));
  }
}
// What went over the wire: ids, never query text.
console.log(JSON.stringify({ sent: sent.map((b) => ({ hasQuery: typeof b.query === "string", id: b.extensions?.persistedQuery?.sha256Hash ?? null })) }));
