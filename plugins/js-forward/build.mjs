// Builds forward.js into a component of contract 0.2.0, beside the Rust
// plugins: ../../target/wasm32-wasip2/release/js_forward.wasm.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '../../target/wasm32-wasip2/release/js_forward.wasm');
const { component } = await componentize({
  sourcePath: resolve(here, 'forward.js'),
  witPath: resolve(here, '../../wit/switchyard-plugin@0.2.0'),
  worldName: 'plugin',
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes)`);
