// The Apollo Client every screen shares. The link chain, outermost first:
//   [dev only] manifest verification → bearer token → persisted-query ids → response metadata → HTTP

import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import {
  createPersistedQueryManifestVerificationLink,
  generatePersistedQueryIdsFromManifest,
  type PersistedQueryManifestForVerification,
} from "@apollo/persisted-query-lists";
import { map } from "rxjs";
import manifestFile from "../persisted-query-manifest.json";
import type { Auth } from "./auth";
import type { AppConfig } from "./config";
import { headerMetadata } from "./errors";

// JSON imports type `type` as string; the file is generate-persisted-query-manifest's output.
const manifest = manifestFile as PersistedQueryManifestForVerification;

export function createClient(config: AppConfig, auth: Auth): ApolloClient {
  const authLink = new SetContextLink(async (context) => {
    const token = await auth.token();
    // No token: send the request anyway; the gateway answers UNAUTHENTICATED and the error
    // handler starts a login, which keeps that decision in one place.
    if (!token) return {};
    return { headers: { ...context.headers, authorization: `Bearer ${token}` } };
  });

  // Persisted query *list* mode: the id comes from the committed manifest, by operation name,
  // and the text is never sent, not even as a fallback when the gateway does not know the id
  // (retry: false). So the app behaves everywhere as it must under the gateway's `enforce` mode,
  // and a manifest the gateway was not given shows up as an error at once, not in production.
  const persistedQueries = new PersistedQueryLink({
    ...generatePersistedQueryIdsFromManifest({ loadManifest: () => manifest }),
    retry: () => false,
  });

  const http = new HttpLink({ uri: config.graphqlUrl });

  let link = ApolloLink.from([authLink, persistedQueries, responseMetadataLink(), http]);
  if (import.meta.env.DEV) {
    // Catches a document edited without `npm run manifest` before the gateway does.
    link = createPersistedQueryManifestVerificationLink({
      loadManifest: () => manifest,
      onVerificationFailed: (details) =>
        console.error(`Operation ${details.operation.operationName} does not match the manifest (${details.reason}): run npm run manifest`),
    }).concat(link);
  }

  return new ApolloClient({
    link,
    cache: new InMemoryCache(),
    // Every screen fetches what it shows: under RLS what the cache remembers may no longer be
    // visible (an unassigned patient), so the network is the source of truth.
    defaultOptions: {
      query: { fetchPolicy: "network-only" },
    },
  });
}

/**
 * Copies the gateway's `x-request-id` and `Retry-After` response headers into each GraphQL
 * error's extensions (`requestId`, `retryAfter`), so whoever shows the error can quote them:
 * the errors the client hands back no longer carry the HTTP response.
 */
function responseMetadataLink(): ApolloLink {
  return new ApolloLink((operation, forward) =>
    forward(operation).pipe(
      map((result) => {
        if (!("errors" in result) || !result.errors?.length) return result;
        const response = operation.getContext().response as Response | undefined;
        const metadata = headerMetadata(response);
        return {
          ...result,
          errors: result.errors.map((error) => ({
            ...error,
            extensions: { ...metadata, ...error.extensions },
          })),
        };
      }),
    ),
  );
}
