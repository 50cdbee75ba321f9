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
