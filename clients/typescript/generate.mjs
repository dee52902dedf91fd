// Generates generated/schema.d.ts from leadscore's OpenAPI document (a URL or a file) with openapi-typescript's
// Node API. The CLI does the same but for one option: `format: binary` (the CSV upload) becomes `Blob` instead of
// `string`, so a file streams from disk (`fs.openAsBlob`) into the request. Warnings fail the generation.
import { writeFileSync, mkdirSync } from "node:fs";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";

const source = process.argv[2];
if (!source) {
  console.error("usage: node generate.mjs OPENAPI_URL_OR_FILE");
  process.exit(2);
}
const BLOB = ts.factory.createTypeReferenceNode(ts.factory.createIdentifier("Blob"));
// openapi-typescript reports problems of the document on the console: any of them fails the generation.
const warnings = [];
const report = console.error;
for (const level of ["warn", "error"]) console[level] = (...args) => warnings.push(args.join(" "));
const ast = await openapiTS(source.includes("://") ? new URL(source) : new URL(source, `file://${process.cwd()}/`), {
  transform(schema) {
    if (schema.format === "binary") return BLOB;
  },
});
if (warnings.length) {
  report(`openapi-typescript warned:\n${warnings.join("\n")}`);
  process.exit(1);
}
mkdirSync("generated", { recursive: true });
writeFileSync("generated/schema.d.ts", astToString(ast));
console.log("generated/schema.d.ts written");
