// Validates OpenAPI documents (YAML or JSON) against the OpenAPI JSON Schemas, $refs resolved:
// `node validate.mjs FILE...` prints one JSON array, {"file", "valid", "errors"?} per file, and
// exits 0 only when every file is valid. One process for several files: the validator compiles
// the OpenAPI meta-schemas once.
import { Validator } from "@seriousme/openapi-schema-validator";

const validator = new Validator();
const results = [];
for (const file of process.argv.slice(2)) {
	const r = await validator.validate(file);
	results.push({ file, valid: r.valid, ...(r.valid ? {} : { errors: r.errors }) });
}
console.log(JSON.stringify(results, null, 1));
process.exit(results.length > 0 && results.every((r) => r.valid) ? 0 : 1);
