// The contract switchyard:plugin@0.2.0 as componentize-js presents it to
// JavaScript: WIT names in camelCase, a `u64`/`s64` a BigInt, an `option`
// undefined when absent, a `result`'s error thrown (as an Error whose
// `payload` is the error value), a `variant` an object {tag, val}.

declare module 'switchyard:plugin/messages@0.2.0' {
  /** One delivery of a message to the queue's plugin. */
  export interface Message {
    /** The message's id: the same on every delivery. */
    id: string;
    /** Its type, as the producer wrote it (`chat.ended`). */
    messageType: string;
    /** The queue it is delivered to. */
    queue: string;
    /** The body, JSON text. */
    body: string;
    /** The producer's headers (fields other than type, id and body). */
    headers: Array<[string, string]>;
    /** 1 on the first delivery. */
    attempt: number;
  }
  export interface Retry {
    reason: string;
    delayMs?: bigint;
  }
  export type Failure = { tag: 'retry'; val: Retry } | { tag: 'reject'; val: string };
}

declare module 'switchyard:plugin/log@0.2.0' {
  export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';
  export function log(level: Level, message: string): void;
}

declare module 'switchyard:plugin/config@0.2.0' {
  /** A value of the queue's `config` table, as text. */
  export function get(key: string): string | undefined;
  /** The whole `config` table as JSON. */
  export function getJson(): string;
}

declare module 'switchyard:plugin/publish@0.2.0' {
  /** Holds a follow-up message in the call's outbox; returns its id.
   * Throws (payload: the reason) when the queue does not grant the type. */
  export function publish(messageType: string, body: string, headers: Array<[string, string]>): string;
}

declare module 'switchyard:plugin/sql@0.2.0' {
  export type DbValue =
    | { tag: 'null' }
    | { tag: 'boolean'; val: boolean }
    | { tag: 'int32'; val: number }
    | { tag: 'int64'; val: bigint }
    | { tag: 'floating64'; val: number }
    | { tag: 'str'; val: string }
    | { tag: 'binary'; val: Uint8Array };
  export interface Column {
    name: string;
    dataType: string;
  }
  export interface RowSet {
    columns: Column[];
    rows: DbValue[][];
  }
  export interface DatabaseError {
    code: string;
    message: string;
    transient: boolean;
  }
  export type Error =
    | { tag: 'not-granted' }
    | { tag: 'database'; val: DatabaseError }
    | { tag: 'unavailable'; val: string }
    | { tag: 'timeout'; val: string }
    | { tag: 'invalid'; val: string };
  export function query(statement: string, params: DbValue[]): RowSet;
  export function execute(statement: string, params: DbValue[]): bigint;
  export function begin(): void;
  export function commit(): void;
  export function rollback(): void;
}

declare module 'switchyard:plugin/mail@0.2.0' {
  export interface Email {
    from: string;
    to: string[];
    cc: string[];
    bcc: string[];
    replyTo?: string;
    subject: string;
    text?: string;
    html?: string;
    headers: Array<[string, string]>;
  }
  export type Error =
    | { tag: 'not-granted' }
    | { tag: 'invalid'; val: string }
    | { tag: 'permanent'; val: string }
    | { tag: 'transient'; val: string };
  /** Sends a mail; returns its Message-ID. */
  export function send(message: Email): string;
}

declare module 'wasi:keyvalue/store@0.2.0-draft2' {
  export type Error = { tag: 'no-such-store' } | { tag: 'access-denied' } | { tag: 'other'; val: string };
  export interface KeyResponse {
    keys: string[];
    cursor?: string;
  }
  export class Bucket {
    get(key: string): Uint8Array | undefined;
    set(key: string, value: Uint8Array): void;
    delete(key: string): void;
    exists(key: string): boolean;
    listKeys(cursor?: string): KeyResponse;
  }
  export function open(identifier: string): Bucket;
}

declare module 'wasi:keyvalue/atomics@0.2.0-draft2' {
  import type { Bucket } from 'wasi:keyvalue/store@0.2.0-draft2';
  export function increment(bucket: Bucket, key: string, delta: bigint): bigint;
}
