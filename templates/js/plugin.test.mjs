// The built plugin on a sample event, as a queue would run it, without
// Redis (`switchyard invoke`): the CRM's answer canned, key-value state in
// memory. Build it first: npm run build. Then: npm test
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { invoke } from './kit/testing.mjs';

const PLUGIN = '{{snake}}.wasm';
const GRANTS = ['--config', 'url=https://crm.example.com/chats', '--allow-host', 'https://crm.example.com'];

test('a chat is sent, counted and announced', () => {
  const report = invoke(PLUGIN, 'chat.ended', '@event.json', [...GRANTS, '--http', '@answers.json']);
  assert.equal(report.outcome, 'success', JSON.stringify(report));
  assert.equal(report.requests[0].status, 201);
  assert.equal(report.keyvalue.chats['1001'], '1');
  assert.equal(report.published[0].type, 'crm.synced');
});

test('a CRM outage is retried', () => {
  const report = invoke(PLUGIN, 'chat.ended', '@event.json', [...GRANTS, '--http', '@answers-down.json']);
  // 503 with Retry-After: 30 s.
  assert.equal(report.outcome, 'retry', JSON.stringify(report));
  assert.equal(report.delay_ms, 30000);
  assert.deepEqual(report.published, []);
});

test('a body that is not a chat is rejected', () => {
  const report = invoke(PLUGIN, 'chat.ended', '{"SiteId": 1}', [...GRANTS, '--http', '@answers.json']);
  assert.equal(report.outcome, 'reject', JSON.stringify(report));
  assert.match(report.reason, /ChatGuid/);
});
