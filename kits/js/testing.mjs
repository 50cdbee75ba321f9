// Running a built plugin the way a queue does, without Redis, from a test
// (Node, outside the component): `switchyard invoke`, found as
// $SWITCHYARD or on the PATH.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * `switchyard invoke <plugin> --type <messageType> --body <body> --json <args>`:
 * its report (`outcome`, `reason`, `delay_ms`, `logs`, `requests`,
 * `keyvalue`, `published`...). `body` is the body itself, or `@file`.
 * @param {string} plugin
 * @param {string} messageType
 * @param {string} body
 * @param {string[]} [args]
 * @returns {Record<string, any>}
 */
export function invoke(plugin, messageType, body, args = []) {
  if (!existsSync(plugin)) {
    throw new Error(`${plugin} is not built yet: npm run build`);
  }
  const program = process.env.SWITCHYARD ?? 'switchyard';
  const done = spawnSync(program, ['invoke', plugin, '--type', messageType, '--body', body, '--json', ...args], {
    encoding: 'utf8',
  });
  if (done.error) {
    throw new Error(`running ${program}: ${done.error.message} (set SWITCHYARD to its path)`);
  }
  try {
    return JSON.parse(done.stdout);
  } catch (e) {
    throw new Error(`${program} invoke gave no report (${e instanceof Error ? e.message : e}): ${done.stdout}${done.stderr}`);
  }
}
