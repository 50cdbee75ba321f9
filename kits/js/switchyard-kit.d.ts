// The kit's types (switchyard-kit.js). The contract's own: contract.d.ts;
// the chat payloads: chat-events.d.ts.
/// <reference path="./contract.d.ts" />

import type { Message } from 'switchyard:plugin/messages@0.2.0';

export type { Message };

/** How long a message waits when the queue's config lacks a setting or a grant. */
export const MISSING_SETTING_DELAY_MS: number;

/** Why a message was not handled: thrown by a handler. */
export class Failure extends Error {
  readonly kind: 'retry' | 'reject';
  readonly delayMs?: number;
  /** A transient failure: delivered again after `delayMs`, or the queue's backoff. */
  static retry(reason: string, delayMs?: number): Failure;
  /** A permanent failure: dead-lettered with `reason`. */
  static reject(reason: string): Failure;
  toContract(): import('switchyard:plugin/messages@0.2.0').Failure;
}

/** The `handler` export: `export const handler = exportHandler(async (message) => {...})`. */
export function exportHandler(handle: (message: Message) => void | Promise<void>): {
  handle(message: Message): Promise<void>;
};

export const log: {
  debug(text: string): void;
  info(text: string): void;
  warn(text: string): void;
  error(text: string): void;
};

export const config: {
  get(key: string): string | undefined;
  /** Throws a Failure that retries after a minute when the setting is missing. */
  required(key: string): string;
  json(): Record<string, unknown>;
};

/** Publishes a follow-up message; returns its id. */
export function publish(messageType: string, body: unknown, headers?: Record<string, string>): string;

export const kv: {
  get(bucket: string, key: string): Uint8Array | undefined;
  getText(bucket: string, key: string): string | undefined;
  set(bucket: string, key: string, value: string | Uint8Array): void;
  delete(bucket: string, key: string): void;
  /** Atomic; returns the new value. */
  increment(bucket: string, key: string, delta?: number): number;
};

export const http: {
  request(
    method: string,
    url: string,
    init?: { body?: string | Uint8Array | unknown; headers?: Record<string, string> },
  ): Promise<Response>;
  get(url: string, headers?: Record<string, string>): Promise<Response>;
  post(url: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  put(url: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  /** 2xx: the response; 408, 429, 5xx: Failure.retry (Retry-After honoured); else Failure.reject. */
  check(response: Response, what: string): Promise<Response>;
};

/** A SQL parameter or column value. */
export type SqlValue = null | boolean | number | bigint | string | Uint8Array;

/** SQL on the queue's PostgreSQL database. Errors throw the Failure they
 * call for (see `sql.failure`). */
export const sql: {
  /** Rows as objects by column name; an int64 is a number when it fits one exactly, else a bigint. */
  query(statement: string, params?: SqlValue[], what?: string): Record<string, SqlValue>[];
  /** The number of rows affected. */
  execute(statement: string, params?: SqlValue[], what?: string): number;
  /** Committed when `work` returns, rolled back when it throws. */
  transaction<T>(work: () => T | Promise<T>, what?: string): Promise<T>;
  /** The Failure an error of the raw `sql` interface calls for. */
  failure(error: unknown, what: string): Failure;
};

/** Mail through the queue's SMTP relay. Errors throw the Failure they call for. */
export const mail: {
  /** Returns the mail's Message-ID. */
  send(
    email: {
      from: string;
      to: string | string[];
      subject: string;
      text?: string;
      html?: string;
      cc?: string[];
      bcc?: string[];
      replyTo?: string;
      headers?: Record<string, string>;
    },
    what?: string,
  ): string;
  /** The Failure an error of the raw `mail` interface calls for. */
  failure(error: unknown, what: string): Failure;
};
