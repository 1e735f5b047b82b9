#!/usr/bin/env node
/**
 * Merges the package template into the package.json that wasm-pack generated:
 *
 *   node www/tools/merge-pkg.mjs pkg.json pkg/package.json
 *
 * Objects merge recursively and the template wins on conflicts, except `files`, whose entries
 * from both sides are kept (the generated ones first). The result replaces the second file.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** @param {unknown} value */
function isPlainObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Deep-merges `template` into `generated` (neither is modified).
 * @param {Record<string, unknown>} generated
 * @param {Record<string, unknown>} template
 * @returns {Record<string, unknown>}
 */
export function mergePackage(generated, template) {
  const merged = { ...generated };
  for (const [key, value] of Object.entries(template)) {
    const base = merged[key];
    if (key === 'files' && Array.isArray(base) && Array.isArray(value)) {
      merged[key] = [...new Set([...base, ...value])];
    } else if (isPlainObject(base) && isPlainObject(value)) {
      merged[key] = mergePackage(base, value);
    } else {
      merged[key] = value;
    }
  }
  return merged;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const [templatePath, generatedPath] = process.argv.slice(2);
  if (!templatePath || !generatedPath || process.argv.length > 4) {
    console.error('usage: node www/tools/merge-pkg.mjs <template.json> <generated package.json>');
    process.exit(2);
  }
  const read = (path) => JSON.parse(readFileSync(path, 'utf8'));
  const merged = mergePackage(read(generatedPath), read(templatePath));
  writeFileSync(generatedPath, `${JSON.stringify(merged, null, 2)}\n`);
  console.log(`merged ${templatePath} into ${generatedPath}`);
}
