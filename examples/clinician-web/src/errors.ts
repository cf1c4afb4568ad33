// Turns whatever Apollo Client threw into the one thing the UI needs: a code to branch on and
// the details worth showing (request id for support, seconds to wait when rate limited).

import { CombinedGraphQLErrors, ServerError } from "@apollo/client/errors";

export interface Problem {
  /** Rowguard's `extensions.code`, or NETWORK when no answer came back. */
  code: string;
  message: string;
  requestId?: string;
  retryAfter?: number;
  /** Where in the response it applies (e.g. ["patient", "clinicalNotes"]). */
  path?: readonly (string | number)[];
}

interface GraphQLErrorLike {
  message: string;
  path?: readonly (string | number)[];
  extensions?: Record<string, unknown>;
}

function fromGraphQLError(error: GraphQLErrorLike, fallback: Partial<Problem> = {}): Problem {
  const ext = error.extensions ?? {};
  return {
    code: typeof ext.code === "string" ? ext.code : "INTERNAL_SERVER_ERROR",
    message: error.message,
    requestId: typeof ext.requestId === "string" ? ext.requestId : fallback.requestId,
    retryAfter: typeof ext.retryAfter === "number" ? ext.retryAfter : fallback.retryAfter,
    path: error.path,
  };
}

/** Every problem in an error, in the order the gateway reported them. */
export function problems(error: unknown): Problem[] {
  if (CombinedGraphQLErrors.is(error)) return error.errors.map((e) => fromGraphQLError(e));
  if (ServerError.is(error)) {
    // A non-GraphQL status (e.g. 429 as plain JSON): the body usually still holds the errors.
    const metadata = headerMetadata(error.response);
    try {
      const body = JSON.parse(error.bodyText) as { errors?: GraphQLErrorLike[] };
      if (body.errors?.length) return body.errors.map((e) => fromGraphQLError(e, metadata));
    } catch {
      // not JSON: fall through
    }
    const code = error.statusCode === 401 ? "UNAUTHENTICATED" : error.statusCode === 429 ? "RATE_LIMITED" : "HTTP_" + error.statusCode;
    return [{ code, message: error.message, ...metadata }];
  }
  if (error instanceof TypeError) return [{ code: "NETWORK", message: "The server could not be reached" }];
  return [{ code: "UNKNOWN", message: error instanceof Error ? error.message : String(error) }];
}

/** The problem that decides what the UI does: the first one. */
export function problem(error: unknown): Problem {
  return problems(error)[0] ?? { code: "UNKNOWN", message: String(error) };
}

/** What to tell the user for each code the app does not handle on the spot. */
export function userMessage(p: Problem): string {
  switch (p.code) {
    case "FORBIDDEN":
      return "You are not allowed to do that.";
    case "NOT_FOUND":
      return "Not found or not visible to you.";
    case "RATE_LIMITED":
      return p.retryAfter !== undefined
        ? `Too many requests. Try again in ${p.retryAfter} s.`
        : "Too many requests. Try again shortly.";
    case "UNAUTHENTICATED":
      return "Your sign-in was not accepted by the server. Log out and in again, or ask an administrator to check the identity-provider settings.";
    case "NETWORK":
      return "The server could not be reached. Check your connection and try again.";
    default:
      return p.requestId
        ? `Something went wrong (request id ${p.requestId}).`
        : "Something went wrong.";
  }
}

/** The gateway's request id and Retry-After, from a response's headers. */
export function headerMetadata(response: Response | undefined): { requestId?: string; retryAfter?: number } {
  if (!response?.headers) return {};
  const requestId = response.headers.get("x-request-id") ?? undefined;
  const retryAfterText = response.headers.get("retry-after");
  const retryAfter = retryAfterText && /^\d+$/.test(retryAfterText) ? Number(retryAfterText) : undefined;
  return { requestId, retryAfter };
}
