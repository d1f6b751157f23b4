#!/usr/bin/env node
// Validates AsyncAPI documents with the official parser (@asyncapi/parser), $refs to
// files resolved relative to each document. Prints one line per diagnostic and exits 1
// when any document has an error (or, with --strict, a warning), 2 on bad usage.
//
// Usage: node check.mjs [--strict] FILE...
import { resolve } from 'node:path';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';

const args = process.argv.slice(2);
const strict = args.includes('--strict');
const files = args.filter((arg) => arg !== '--strict');
if (files.length === 0) {
  console.error('usage: node check.mjs [--strict] FILE...');
  process.exit(2);
}

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
let failed = false;
for (const file of files) {
  const path = resolve(file);
  let diagnostics;
  let document;
  try {
    ({ document, diagnostics } = await fromFile(parser, path).parse());
  } catch (error) {
    console.log(`${file}: error: ${error.message.split('\n')[0]}`);
    failed = true;
    continue;
  }
  const blocking = diagnostics.filter(
    (d) => d.severity === DiagnosticSeverity.Error
      || (strict && d.severity === DiagnosticSeverity.Warning),
  );
  for (const d of diagnostics) {
    const where = d.path.length ? ` at ${d.path.join('.')}` : '';
    const source = d.source && resolve(d.source) !== path ? ` in ${d.source}` : '';
    console.log(`${file}: ${SEVERITY[d.severity]}: ${d.code}: ${d.message}${where}${source}`);
  }
  if (blocking.length > 0 || document === undefined) {
    failed = true;
  } else {
    const channels = document.channels().length;
    const messages = document.messages().length;
    console.log(`${file}: valid AsyncAPI ${document.version()} (${channels} channels, ${messages} messages)`);
  }
}
process.exit(failed ? 1 : 0);
