// Builds plugin.js (and the kit it imports) into a component of contract
// switchyard:plugin@0.2.0: {{snake}}.wasm.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, '{{snake}}.wasm');
const { component } = await componentize({
  sourcePath: resolve(here, 'plugin.js'),
  witPath: resolve(here, 'wit'),
  worldName: 'plugin',
});
await writeFile(out, component);
console.log(`built ${out} (${component.length} bytes)`);
