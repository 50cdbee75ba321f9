"""{{name}}: a Switchyard plugin (contract 0.2.0), written in Python.

For each `chat.ended` it sends the chat to the CRM at the queue's `url` (a
POST with the message id as `Idempotency-Key`, so a redelivery does not
create a second record), counts the site's chats in key-value state, and
publishes `crm.synced`. The CRM's answer decides: 2xx done; 408, 429 and
5xx retried (after `Retry-After`); any other status rejected.

Build: componentize-py -d wit -w plugin componentize app -o {{snake}}.wasm
"""

import json
from typing import Any

from chat_events import Chat
from switchyard_kit import Failure, Message, config, export, http, kv, log, publish


def crm_record(message_id: str, chat: Chat) -> dict[str, Any]:
    """What the CRM is sent for a chat."""
    return {
        "external_id": message_id,
        "chat": chat["ChatGuid"],
        "site": chat["SiteId"],
        "visitor": {"name": chat.get("PreChatName"), "email": chat.get("PreChatEmail")},
        "messages": len(chat.get("Messages") or []),
        "started": chat["Start"],
        "ended": chat["End"],
    }


class Plugin:
    def handle(self, message: Message) -> None:
        if message.message_type.lower() != "chat.ended":
            raise Failure.reject(f"{message.message_type} is not a chat.ended")
        try:
            chat: Chat = json.loads(message.body)
            chat["ChatGuid"], chat["SiteId"], chat["Start"], chat["End"]
        except (ValueError, TypeError, KeyError) as e:
            raise Failure.reject(f"not a chat.ended payload: {type(e).__name__}: {e}")
        url = config.required("url")
        answer = http.post(url, crm_record(message.id, chat), {"idempotency-key": message.id})
        http.check(answer, "sending the chat to the CRM")
        chats = kv.increment("chats", str(chat["SiteId"]), 1)
        log.info(f"chat {chat['ChatGuid']} of site {chat['SiteId']} sent ({chats} so far)")
        publish("crm.synced", {"ChatGuid": chat["ChatGuid"], "SiteId": chat["SiteId"], "Chats": chats})


# What componentize-py exports: the handler, its failures as the contract's,
# any other exception a bug (a trap with the exception's text).
Handler = export(Plugin)
