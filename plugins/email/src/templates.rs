//! The mails' subjects and bodies, text and HTML, from the payloads' fields.
//!
//! Every field a producer sent is data: in HTML it is escaped, and in a
//! subject it is cut to one line of at most [`SUBJECT_CHARS`] characters.

use std::fmt::Write;

use chat_events::{Chat, ChatMessage, CustomField, OfflineMessage};

/// The longest subject written, in characters.
pub const SUBJECT_CHARS: usize = 150;

/// A mail's subject and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `text` escaped for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as a subject: control characters (line breaks among them) turned
/// into spaces, runs of spaces folded, cut to [`SUBJECT_CHARS`] with `…`.
pub fn one_line(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_end();
    if out.chars().count() > SUBJECT_CHARS {
        let cut: String = out.chars().take(SUBJECT_CHARS - 1).collect();
        format!("{}…", cut.trim_end())
    } else {
        out.to_owned()
    }
}

fn sender(m: &ChatMessage) -> String {
    match m.sender_name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => match m.sender_type {
            0 => "Visitor",
            1 => "Agent",
            3 => "Bot",
            _ => "System",
        }
        .to_owned(),
    }
}

/// The lines of a transcript that carry text.
fn said(chat: &Chat) -> impl Iterator<Item = (&ChatMessage, &str)> {
    chat.messages.iter().filter_map(|m| {
        m.message
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .map(|t| (m, t))
    })
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Rows of `(label, value)` shown above a transcript or an offline message:
/// only the fields the payload has.
fn details(rows: &[(&str, Option<&str>)], fields: &[CustomField]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows
        .iter()
        .filter_map(|(label, value)| value.map(|v| ((*label).to_owned(), v.to_owned())))
        .collect();
    for f in fields {
        if let Some(value) = non_empty(&f.value) {
            let label = non_empty(&f.name).map_or_else(|| format!("Field {}", f.id), str::to_owned);
            out.push((label, value.to_owned()));
        }
    }
    out
}

fn text_details(out: &mut String, rows: &[(String, String)]) {
    for (label, value) in rows {
        let _ = writeln!(out, "{label}: {value}");
    }
}

fn html_details(out: &mut String, rows: &[(String, String)]) {
    if rows.is_empty() {
        return;
    }
    out.push_str("<table>\n");
    for (label, value) in rows {
        let _ = writeln!(
            out,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape_html(label),
            escape_html(value)
        );
    }
    out.push_str("</table>\n");
}

fn text_transcript(out: &mut String, chat: &Chat) {
    for (m, text) in said(chat) {
        let _ = writeln!(out, "[{}] {}: {}", m.time, sender(m), text);
    }
}

fn html_transcript(out: &mut String, chat: &Chat) {
    out.push_str("<table>\n");
    for (m, text) in said(chat) {
        let _ = writeln!(
            out,
            "<tr><td><small>{}</small></td><th align=\"left\">{}</th><td>{}</td></tr>",
            escape_html(&m.time),
            escape_html(&sender(m)),
            escape_html(text).replace('\n', "<br>")
        );
    }
    out.push_str("</table>\n");
}

fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{body}</body></html>\n",
        escape_html(title)
    )
}

/// The transcript the visitor gets: what was said, nothing internal.
pub fn visitor_transcript(chat: &Chat) -> Rendered {
    let subject = one_line(&format!("Transcript of your chat of {}", chat.start));
    let name = non_empty(&chat.pre_chat_name);
    let greeting = name.map_or_else(|| "Hello,".to_owned(), |n| format!("Hello {n},"));
    let mut text = format!(
        "{greeting}\n\nhere is the transcript of your chat ({} to {}).\n\n",
        chat.start, chat.end
    );
    text_transcript(&mut text, chat);
    let mut html = format!(
        "<p>{}</p>\n<p>Here is the transcript of your chat ({} to {}).</p>\n",
        escape_html(&greeting),
        escape_html(&chat.start),
        escape_html(&chat.end)
    );
    html_transcript(&mut html, chat);
    Rendered {
        html: html_page(&subject, &html),
        subject,
        text,
    }
}

/// The transcript the site's inbox gets: the visitor's details, the chat's
/// facts and what was said.
pub fn site_transcript(chat: &Chat) -> Rendered {
    let who = non_empty(&chat.pre_chat_name)
        .or(non_empty(&chat.pre_chat_email))
        .unwrap_or("a visitor");
    let subject = one_line(&format!("Chat transcript: {who}, {}", chat.start));
    let agents = chat
        .agent_ids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let rating = chat.rating_grade.map(|r| r.to_string());
    let rows = details(
        &[
            ("Chat", Some(chat.chat_guid.as_str())),
            ("Started", Some(chat.start.as_str())),
            ("Ended", Some(chat.end.as_str())),
            ("Name", non_empty(&chat.pre_chat_name)),
            ("Email", non_empty(&chat.pre_chat_email)),
            ("Phone", non_empty(&chat.pre_chat_phone)),
            ("Company", non_empty(&chat.pre_chat_company)),
            ("Agents", Some(agents.as_str()).filter(|a| !a.is_empty())),
            ("Rating", rating.as_deref()),
            ("Page", non_empty(&chat.request_page_url)),
            ("Ticket", non_empty(&chat.ticket_id)),
            ("Agent's comment", non_empty(&chat.agent_comment)),
        ],
        &chat.custom_fields,
    );
    let mut text = String::new();
    text_details(&mut text, &rows);
    text.push('\n');
    text_transcript(&mut text, chat);
    let mut html = String::new();
    html_details(&mut html, &rows);
    html.push_str("<hr>\n");
    html_transcript(&mut html, chat);
    Rendered {
        html: html_page(&subject, &html),
        subject,
        text,
    }
}

/// The notification of an offline message, for the site's inbox.
pub fn offline_notification(offline: &OfflineMessage) -> Rendered {
    let who = non_empty(&offline.visitor_name)
        .or(non_empty(&offline.visitor_email))
        .unwrap_or("a visitor");
    let subject = match non_empty(&offline.title) {
        Some(title) => one_line(&format!("Offline message from {who}: {title}")),
        None => one_line(&format!("Offline message from {who}")),
    };
    let rows = details(
        &[
            ("Name", non_empty(&offline.visitor_name)),
            ("Email", non_empty(&offline.visitor_email)),
            ("Phone", non_empty(&offline.visitor_phone)),
            ("Company", non_empty(&offline.visitor_company)),
            ("Title", non_empty(&offline.title)),
            ("Attachment", non_empty(&offline.attachment_name)),
        ],
        &offline.custom_fields,
    );
    let content = non_empty(&offline.content).unwrap_or("(no message)");
    let mut text = String::new();
    text_details(&mut text, &rows);
    let _ = write!(text, "\n{content}\n");
    let mut html = String::new();
    html_details(&mut html, &rows);
    let _ = writeln!(
        html,
        "<hr>\n<p>{}</p>",
        escape_html(content).replace('\n', "<br>")
    );
    Rendered {
        html: html_page(&subject, &html),
        subject,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_events::Payload;

    fn chat(body: serde_json::Value) -> Chat {
        match Payload::parse("chat.ended", &body.to_string()).unwrap() {
            Payload::ChatEnded(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    fn sample() -> Chat {
        chat(serde_json::json!({
            "ChatGuid": "c-1", "SessionId": 7, "SiteId": 1001, "AgentIds": [5],
            "Start": "2026-11-23T10:00:00Z", "End": "2026-11-23T10:05:00Z",
            "PreChatName": "Ana <script>alert(1)</script>",
            "PreChatEmail": "ana@visitor.example",
            "AgentComment": "internal note",
            "Messages": [
                { "Id": 1, "SenderType": 0, "Message": "Hi & <b>bye</b>", "Time": "2026-11-23T10:00:00Z" },
                { "Id": 2, "SenderType": 1, "SenderName": "Bo", "Message": "Hello\nthere", "Time": "2026-11-23T10:01:00Z" },
                { "Id": 3, "SenderType": 2, "ChatAction": 4, "Time": "2026-11-23T10:02:00Z" }
            ],
            "CustomFields": [{ "Id": 9, "Name": "Order", "Value": "\"42\"" }]
        }))
    }

    #[test]
    fn payload_text_is_escaped_in_html() {
        for r in [visitor_transcript(&sample()), site_transcript(&sample())] {
            assert!(!r.html.contains("<script>"), "{}", r.html);
            assert!(!r.html.contains("<b>bye"), "{}", r.html);
            assert!(
                r.html.contains("Hi &amp; &lt;b&gt;bye&lt;/b&gt;"),
                "{}",
                r.html
            );
            assert!(r.html.contains("Hello<br>there"), "{}", r.html);
            // The text body is plain text: as sent.
            assert!(
                r.text
                    .contains("[2026-11-23T10:00:00Z] Visitor: Hi & <b>bye</b>"),
                "{}",
                r.text
            );
            assert!(
                r.text.contains("[2026-11-23T10:01:00Z] Bo: Hello\nthere"),
                "{}",
                r.text
            );
        }
        let site = site_transcript(&sample());
        assert!(site.html.contains("&quot;42&quot;"), "{}", site.html);
        assert!(site.text.contains("Order: \"42\""), "{}", site.text);
    }

    #[test]
    fn the_visitor_sees_no_internal_fields() {
        let visitor = visitor_transcript(&sample());
        assert!(!visitor.text.contains("internal note"));
        assert!(!visitor.html.contains("internal note"));
        let site = site_transcript(&sample());
        assert!(
            site.text.contains("Agent's comment: internal note"),
            "{}",
            site.text
        );
        assert!(site.text.contains("Agents: 5"), "{}", site.text);
    }

    #[test]
    fn subjects_are_one_bounded_line() {
        assert_eq!(
            one_line("  a\r\nBcc: x@y.example\t b "),
            "a Bcc: x@y.example b"
        );
        let long = one_line(&"é".repeat(400));
        assert_eq!(long.chars().count(), SUBJECT_CHARS);
        assert!(long.ends_with('…'));
        let s = site_transcript(&sample()).subject;
        assert_eq!(
            s,
            "Chat transcript: Ana <script>alert(1)</script>, 2026-11-23T10:00:00Z"
        );
    }

    #[test]
    fn an_offline_message_shows_what_the_visitor_left() {
        let Payload::OfflineMessageSubmitted(o) = Payload::parse(
            "offlinemessage.submitted",
            &serde_json::json!({
                "SiteId": 1001, "VisitorName": "Ana", "VisitorEmail": "ana@visitor.example",
                "Title": "Refund\nplease", "Content": "My order <42> & more"
            })
            .to_string(),
        )
        .unwrap() else {
            panic!()
        };
        let r = offline_notification(&o);
        assert_eq!(r.subject, "Offline message from Ana: Refund please");
        assert!(r.text.ends_with("\nMy order <42> & more\n"), "{}", r.text);
        assert!(
            r.html.contains("My order &lt;42&gt; &amp; more"),
            "{}",
            r.html
        );
    }
}
