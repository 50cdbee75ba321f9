// A Switchyard plugin in JavaScript, contract 0.2.0: forwards each message,
// as JSON, to the URL its queue's config names, with the standard `fetch`
// (componentize-js implements it on wasi:http).
//
//     POST <url>
//     Content-Type: application/json
//     Idempotency-Key: <message id>
//
//     {"id": ..., "type": ..., "attempt": ..., "data": <the message's body>}
//
// A 2xx answer is done; 408, 429 and 5xx (and a failed request) are
// retried, after Retry-After if given; any other status rejects the
// message. A failure is thrown as {tag: 'retry' | 'reject', val}.
//
// Build: npm ci && npm run build (scripts/build-polyglot.sh does this).

import { get as setting } from 'switchyard:plugin/config@0.2.0';
import { log } from 'switchyard:plugin/log@0.2.0';

function retry(reason, delaySeconds) {
  const delayMs = delaySeconds === undefined ? undefined : BigInt(delaySeconds) * 1000n;
  return { tag: 'retry', val: { reason, delayMs } };
}

function reject(reason) {
  return { tag: 'reject', val: reason };
}

export const handler = {
  // An async export: componentize-js runs the event loop until the promise
  // settles, so `await fetch(...)` works in a handler.
  async handle(message) {
    const url = setting('url');
    if (!url) {
      throw retry("the queue's config has no `url`", 60);
    }
    const event = {
      id: message.id,
      type: message.messageType,
      attempt: message.attempt,
      data: JSON.parse(message.body),
    };
    let response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': message.id,
          'user-agent': 'switchyard-js-forward',
        },
        body: JSON.stringify(event),
      });
        } catch (e) {
      // fetch reports every failure alike (a TypeError, as the WHATWG spec
      // has it), a destination the queue does not grant included: retry,
      // and the host's log says which it was.
      throw retry(`forwarding to ${url}: ${e}`);
    }
    const text = (await response.text()).slice(0, 300);
    const status = response.status;
    if (status >= 200 && status < 300) {
      log('info', `forwarded ${message.id} to ${url}: HTTP ${status}`);
      return;
    }
    if (status === 408 || status === 429 || status >= 500) {
      const after = response.headers.get('retry-after');
      throw retry(`forwarding: HTTP ${status}: ${text}`, /^\d+$/.test(after ?? '') ? Number(after) : undefined);
    }
    throw reject(`forwarding: HTTP ${status}: ${text}`);
  },
};
