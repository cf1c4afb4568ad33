import type { ApolloClient } from "@apollo/client";
import type { AppRole } from "../auth";
import type { Problem } from "../errors";

/** What every screen gets from the shell. */
export interface AppContext {
  client: ApolloClient;
  /** The role the UI is shaped for (the server enforces the real one). */
  role: AppRole | undefined;
  /** Reports an error the screen does not handle itself (see errors.ts for the codes). */
  fail(error: unknown): void;
  /** The same, for a problem the screen recognised itself (e.g. a null patient). */
  report(problem: Problem): void;
  clearError(): void;
}
