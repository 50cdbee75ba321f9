// {{name}}: a Switchyard plugin (contract 0.2.0), written in JavaScript.
//
// For each `chat.ended` it sends the chat to the CRM at the queue's `url`
// (a POST with the message id as `Idempotency-Key`, so a redelivery does
// not create a second record), counts the site's chats in key-value state,
// and publishes `crm.synced`. The CRM's answer decides: 2xx done; 408, 429
// and 5xx retried (after `Retry-After`); any other status rejected.
//
// Build: npm run build (-> {{snake}}.wasm)

import { Failure, config, exportHandler, http, kv, log, publish } from './kit/switchyard-kit.js';

/** @typedef {import('./kit/chat-events.js').Chat} Chat */
/** @typedef {import('./kit/switchyard-kit.js').Message} Message */

/** The fields a chat.ended must have. @type {(keyof Chat)[]} */
const REQUIRED = ['ChatGuid', 'SiteId', 'Start', 'End'];

/**
 * What the CRM is sent for a chat.
 * @param {string} messageId
 * @param {Chat} chat
 */
export function crmRecord(messageId, chat) {
  return {
    external_id: messageId,
    chat: chat.ChatGuid,
    site: chat.SiteId,
    visitor: { name: chat.PreChatName ?? null, email: chat.PreChatEmail ?? null },
    messages: (chat.Messages ?? []).length,
    started: chat.Start,
    ended: chat.End,
  };
}

/** @param {Message} message */
async function handle(message) {
  if (message.messageType.toLowerCase() !== 'chat.ended') {
    throw Failure.reject(`${message.messageType} is not a chat.ended`);
  }
  /** @type {Chat} */
  let chat;
  try {
    chat = JSON.parse(message.body);
  } catch (e) {
    throw Failure.reject(`not a chat.ended payload: ${e instanceof Error ? e.message : e}`);
  }
  for (const field of REQUIRED) {
    if (chat?.[field] === undefined || chat[field] === null) {
      throw Failure.reject(`not a chat.ended payload: no ${field}`);
    }
  }
  const url = config.required('url');
  const answer = await http.post(url, crmRecord(message.id, chat), { 'idempotency-key': message.id });
  await http.check(answer, 'sending the chat to the CRM');
  const chats = kv.increment('chats', String(chat.SiteId), 1);
  log.info(`chat ${chat.ChatGuid} of site ${chat.SiteId} sent (${chats} so far)`);
  publish('crm.synced', { ChatGuid: chat.ChatGuid, SiteId: chat.SiteId, Chats: chats });
}

// What componentize-js exports: the handler, its failures as the
// contract's, anything else thrown a bug (a trap with the error's text).
export const handler = exportHandler(handle);
