// Writing Switchyard plugins in JavaScript, contract switchyard:plugin@0.2.0,
// built with componentize-js. Types: switchyard-kit.d.ts.
//
//     import { Failure, config, exportHandler, http, kv, log, mail, publish, sql } from './switchyard-kit.js';
//
//     export const handler = exportHandler(async (message) => {
//       const answer = await http.post(config.required('url'), { id: message.id });
//       await http.check(answer, 'notifying');   // 2xx ok; 408/429/5xx retry; else reject
//       await kv.increment('chats', 'total');
//       publish('crm.synced', { id: message.id });
//     });
//
// A handler returns to succeed, throws `Failure.retry(...)` or
// `Failure.reject(...)` to fail; anything else it throws is a bug: the kit
// writes the error's name, message and place (not the whole stack) to
// stderr and traps, which the host counts as a trap (dead-lettered after
// the queue's `max_trap_attempts`).

import { get as configGet, getJson as configGetJson } from 'switchyard:plugin/config@0.2.0';
import { log as hostLog } from 'switchyard:plugin/log@0.2.0';
import { publish as hostPublish } from 'switchyard:plugin/publish@0.2.0';
import {
  begin as sqlBegin,
  commit as sqlCommit,
  execute as sqlExecute,
  query as sqlQuery,
  rollback as sqlRollback,
} from 'switchyard:plugin/sql@0.2.0';
import { send as mailSend } from 'switchyard:plugin/mail@0.2.0';
import { open as openBucket } from 'wasi:keyvalue/store@0.2.0-draft2';
import { increment as atomicIncrement } from 'wasi:keyvalue/atomics@0.2.0-draft2';

/** How long a message waits when the queue's config lacks a setting or a
 * grant: the message is fine, the operator's fix is what is missing. */
export const MISSING_SETTING_DELAY_MS = 60_000;

/** Why a message was not handled: thrown by a handler. */
export class Failure extends Error {
  constructor(kind, reason, delayMs) {
    super(reason);
    this.name = 'Failure';
    this.kind = kind;
    this.delayMs = delayMs;
  }

  /** A transient failure: delivered again after `delayMs`, or the queue's backoff. */
  static retry(reason, delayMs) {
    return new Failure('retry', String(reason), delayMs);
  }

  /** A permanent failure: dead-lettered with `reason`. */
  static reject(reason) {
    return new Failure('reject', String(reason));
  }

  /** The contract's `failure` variant, as componentize-js expects it thrown. */
  toContract() {
    if (this.kind === 'reject') {
      return { tag: 'reject', val: this.message };
    }
    const delayMs = this.delayMs === undefined || this.delayMs === null
      ? undefined
      : BigInt(Math.max(0, Math.round(Number(this.delayMs))));
    return { tag: 'retry', val: { reason: this.message, delayMs } };
  }
}

function where(error) {
  const stack = typeof error?.stack === 'string' ? error.stack : '';
  const line = stack.split('\n').map((l) => l.trim()).find((l) => /:\d+:\d+\)?$/.test(l));
  return line ? ` (${line.replace(/^at /, '')})` : '';
}

/** The `handler` export for `handle`, an (async) function of a message:
 * failures thrown as the contract's, anything else a trap with its text. */
export function exportHandler(handle) {
  return {
    async handle(message) {
      try {
        await handle(message);
      } catch (e) {
        if (e instanceof Failure) {
          throw e.toContract();
        }
        if (e && (e.tag === 'retry' || e.tag === 'reject')) {
          throw e;
        }
        const name = e?.name ?? typeof e;
        const text = e?.message ?? String(e);
        console.error(`uncaught ${name}: ${text}${where(e)}`);
        throw new Error(`uncaught ${name}: ${text}`);
      }
    },
  };
}

/** Log lines, in the host's log with the queue and the message id. */
export const log = {
  debug: (text) => hostLog('debug', String(text)),
  info: (text) => hostLog('info', String(text)),
  warn: (text) => hostLog('warn', String(text)),
  error: (text) => hostLog('error', String(text)),
};

/** The queue's `config` table. */
export const config = {
  get: (key) => configGet(key) ?? undefined,
  /** A setting that must be there; without it the message waits (retried
   * after a minute) for the operator to add it. */
  required(key) {
    const value = configGet(key);
    if (value === undefined || value === null || String(value).trim() === '') {
      throw Failure.retry(`the queue's config has no \`${key}\``, MISSING_SETTING_DELAY_MS);
    }
    return value;
  },
  json: () => JSON.parse(configGetJson()),
};

function errorText(e) {
  const payload = e?.payload ?? e;
  if (payload && typeof payload === 'object' && 'tag' in payload) {
    return payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
  }
  return String(payload);
}

/** Publishes a follow-up message (sent only if this delivery is
 * acknowledged) with `body` (JSON-encoded unless a string); returns its id.
 * A refusal (a type not granted) is a Failure that retries: the operator's
 * grant is missing. */
export function publish(messageType, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  try {
    return hostPublish(messageType, text, Object.entries(headers));
  } catch (e) {
    throw Failure.retry(`publishing ${messageType}: ${errorText(e)}`, MISSING_SETTING_DELAY_MS);
  }
}

function kvFailure(e, what) {
  const text = errorText(e);
  if (text === 'access-denied') {
    return Failure.retry(`${what}: key-value state is not granted`, MISSING_SETTING_DELAY_MS);
  }
  return Failure.retry(`${what}: ${text}`);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The queue's key-value buckets (wasi:keyvalue). Values are bytes
 * (Uint8Array) or text; counters are numbers. */
export const kv = {
  get(bucket, key) {
    try {
      return openBucket(bucket).get(key) ?? undefined;
    } catch (e) {
      throw kvFailure(e, `reading ${bucket}/${key}`);
    }
  },
  getText(bucket, key) {
    const value = kv.get(bucket, key);
    return value === undefined ? undefined : decoder.decode(value);
  },
  set(bucket, key, value) {
    const bytes = typeof value === 'string' ? encoder.encode(value) : value;
    try {
      openBucket(bucket).set(key, bytes);
    } catch (e) {
      throw kvFailure(e, `writing ${bucket}/${key}`);
    }
  },
  delete(bucket, key) {
    try {
      openBucket(bucket).delete(key);
    } catch (e) {
      throw kvFailure(e, `deleting ${bucket}/${key}`);
    }
  },
  /** Adds `delta` to the key's integer (0 when absent), atomically; returns
   * the new value (a number: the contract's 64-bit integer, exact up to
   * 2^53). */
  increment(bucket, key, delta = 1) {
    try {
      return Number(atomicIncrement(openBucket(bucket), key, BigInt(delta)));
    } catch (e) {
      throw kvFailure(e, `incrementing ${bucket}/${key}`);
    }
  },
};

function retryAfterMs(value) {
  if (!value) {
    return undefined;
  }
  const text = value.trim();
  if (/^\d+$/.test(text)) {
    return Number(text) * 1000;
  }
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** HTTP through `fetch` (wasi:http), under the queue's `allowed_hosts`. */
export const http = {
  /** Sends a request; a failure to get an answer (a destination not
   * granted among them: fetch does not tell them apart, the host's log
   * does) retries the message. */
  async request(method, url, { body, headers = {} } = {}) {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
      if (typeof body === 'string' || body instanceof Uint8Array) {
        init.body = body;
      } else {
        init.body = JSON.stringify(body);
        const named = Object.keys(init.headers).some((k) => k.toLowerCase() === 'content-type');
        if (!named) {
          init.headers['content-type'] = 'application/json';
        }
      }
    }
    try {
      return await fetch(url, init);
    } catch (e) {
      throw Failure.retry(`${method} ${url}: ${e?.message ?? e}`);
    }
  },
  get: (url, headers) => http.request('GET', url, { headers }),
  /** POSTs `body` (a string or bytes as they are, anything else as JSON). */
  post: (url, body, headers) => http.request('POST', url, { body, headers }),
  put: (url, body, headers) => http.request('PUT', url, { body, headers }),
  /** The rule every shipped plugin applies: 2xx succeeds (the response is
   * returned); 408, 429 and 5xx retry (after Retry-After when given); any
   * other status rejects, with the status and the start of the answer. */
  async check(response, what) {
    const status = response.status;
    if (status >= 200 && status < 300) {
      return response;
    }
    const excerpt = (await response.text()).slice(0, 300);
    if (status === 408 || status === 429 || status >= 500) {
      throw Failure.retry(`${what}: HTTP ${status}: ${excerpt}`, retryAfterMs(response.headers.get('retry-after')));
    }
    throw Failure.reject(`${what}: HTTP ${status}: ${excerpt}`);
  },
};

function sqlParam(value) {
  if (value === null || value === undefined) {
    return { tag: 'null' };
  }
  switch (typeof value) {
    case 'boolean':
      return { tag: 'boolean', val: value };
    case 'bigint':
      return { tag: 'int64', val: value };
    case 'number':
      return Number.isSafeInteger(value)
        ? { tag: 'int64', val: BigInt(value) }
        : { tag: 'floating64', val: value };
    case 'string':
      return { tag: 'str', val: value };
    default:
      if (value instanceof Uint8Array) {
        return { tag: 'binary', val: value };
      }
      throw new TypeError(`a SQL parameter is null, a boolean, a number, a bigint, a string or a Uint8Array, not ${typeof value}`);
  }
}

function sqlColumn(value) {
  switch (value.tag) {
    case 'null':
      return null;
    case 'int64': {
      const n = Number(value.val);
      return Number.isSafeInteger(n) ? n : value.val;
    }
    default:
      return value.val;
  }
}

/** What an error of the contract's `sql` interface says. */
function sqlErrorText(error) {
  switch (error?.tag) {
    case 'not-granted':
      return 'the queue has no database (queues.<name>.sql)';
    case 'database':
      return `${error.val.message} (SQLSTATE ${error.val.code})`;
    case 'unavailable':
      return `no database connection: ${error.val}`;
    default:
      return String(error?.val ?? error);
  }
}

/** SQL on the queue's PostgreSQL database (`[queues.<name>.sql]`).
 * Parameters: null, booleans, numbers (an integer as int64, else a
 * float), bigints, strings, Uint8Arrays; columns come back the same way (an
 * int64 as a number when it fits one exactly, else a bigint). An error
 * throws the Failure it calls for, as the Rust kit's `sql::into_failure`. */
export const sql = {
  /** The Failure an error of the `sql` interface (or the Error a raw
   * binding threw) calls for: retried when
   * transient; after a minute when the operator must act (no database
   * granted, SQLSTATE classes 42, 3F, 28, 0A); rejected otherwise. */
  failure(e, what) {
    const error = e?.payload ?? e;
    const reason = `${what}: ${sqlErrorText(error)}`;
    switch (error?.tag) {
      case 'not-granted':
        return Failure.retry(reason, MISSING_SETTING_DELAY_MS);
      case 'unavailable':
      case 'timeout':
        return Failure.retry(reason);
      case 'database':
        if (error.val.transient) {
          return Failure.retry(reason);
        }
        if (['42', '3F', '28', '0A'].includes(error.val.code.slice(0, 2))) {
          return Failure.retry(reason, MISSING_SETTING_DELAY_MS);
        }
        return Failure.reject(reason);
      default:
        return Failure.reject(reason);
    }
  },
  /** Runs a statement that returns rows: each an object by column name. */
  query(statement, params = [], what = 'SQL') {
    // A parameter of no SQL type is a bug: thrown as it is, a trap.
    const values = params.map(sqlParam);
    let result;
    try {
      result = sqlQuery(statement, values);
    } catch (e) {
      throw sql.failure(e, what);
    }
    const names = result.columns.map((c) => c.name);
    return result.rows.map((row) => Object.fromEntries(row.map((v, i) => [names[i], sqlColumn(v)])));
  },
  /** Runs a statement; returns the number of rows it affected. */
  execute(statement, params = [], what = 'SQL') {
    const values = params.map(sqlParam);
    try {
      return Number(sqlExecute(statement, values));
    } catch (e) {
      throw sql.failure(e, what);
    }
  },
  /** Runs `work` (a function, maybe async) in a transaction: committed when
   * it returns, rolled back when it throws (and the host rolls back one a
   * call leaves open). Returns what `work` returns. */
  async transaction(work, what = 'SQL transaction') {
    try {
      sqlBegin();
    } catch (e) {
      throw sql.failure(e, what);
    }
    let value;
    try {
      value = await work();
    } catch (e) {
      try {
        sqlRollback();
      } catch {
        // The host rolls back what a call leaves open.
      }
      throw e;
    }
    try {
      sqlCommit();
    } catch (e) {
      throw sql.failure(e, what);
    }
    return value;
  },
};

/** What an error of the contract's `mail` interface says. */
function mailErrorText(error) {
  switch (error?.tag) {
    case 'not-granted':
      return 'the queue has no mail relay (queues.<name>.mail)';
    case 'permanent':
      return `the relay refused it: ${error.val}`;
    case 'transient':
      return `not sent: ${error.val}`;
    default:
      return String(error?.val ?? error);
  }
}

/** Mail through the queue's SMTP relay (`[queues.<name>.mail]`). Delivery
 * is at least once: give each mail a Message-ID made from the message id
 * (the host makes one when `headers` has none). */
export const mail = {
  /** The Failure an error of the `mail` interface calls for: an invalid
   * mail or a relay's 5xx rejects, a 4xx or an unreachable relay retries,
   * no relay granted waits a minute for the operator. */
  failure(e, what) {
    const error = e?.payload ?? e;
    const reason = `${what}: ${mailErrorText(error)}`;
    switch (error?.tag) {
      case 'not-granted':
        return Failure.retry(reason, MISSING_SETTING_DELAY_MS);
      case 'transient':
        return Failure.retry(reason);
      default:
        return Failure.reject(reason);
    }
  },
  /** Sends one mail; returns its Message-ID. */
  send({ from, to, subject, text, html, cc = [], bcc = [], replyTo, headers = {} }, what = 'sending mail') {
    try {
      return mailSend({
        from,
        to: Array.isArray(to) ? to : [to],
        cc,
        bcc,
        replyTo,
        subject,
        text,
        html,
        headers: Object.entries(headers),
      });
    } catch (e) {
      throw mail.failure(e, what);
    }
  },
};
