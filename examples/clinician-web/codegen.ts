// Types for the app's operations, generated from the gateway's contract. Validation against
// ../../schema.graphql is the point: an operation the schema no longer accepts (a renamed field,
// a removed argument) fails `npm run codegen`, and with it `check` and `build`.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: "src/operations/*.graphql",
  // A document set that matches nothing is a broken glob, not an empty app.
  ignoreNoDocuments: false,
  errorsOnly: false,
  generates: {
    "src/generated/graphql.ts": {
      plugins: ["typescript-operations", "typed-document-node"],
      config: {
        // Both date scalars travel as strings; refusing unknown scalars keeps a new one from
        // silently becoming `any`.
        strictScalars: true,
        scalars: { DateTime: "string", NaiveDate: "string" },
        useTypeImports: true,
        enumType: "string-literal",
      },
    },
  },
};

export default config;
