//! The Lua scripts the host runs in Redis, one file each in `lua/`, loaded
//! once.
//!
//! Scripts that write start with `#!lua`: Redis then refuses them as a
//! whole when it is out of memory, before they run, rather than at their
//! first write (a script that failed half-way would not be undone). Those
//! that only move entries between a group's lists may run when Redis is out
//! of memory (`allow-oom`): that is when draining matters most.

use std::sync::LazyLock;

use crate::message::MAX_FIELDS;

const DEAD_LETTER_LUA: &str = include_str!("lua/dead_letter.lua");

/// A writing script with the dead-letter helpers.
fn writing_script(body: &str) -> redis::Script {
    redis::Script::new(&format!(
        "#!lua\nlocal MAX_FIELD_VALUES = {}\n{DEAD_LETTER_LUA}\n{body}",
        2 * (MAX_FIELDS + 2)
    ))
}

/// A writing script that needs no helpers.
fn plain_writing_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("#!lua\n{body}"))
}

fn draining_script(body: &str) -> redis::Script {
    redis::Script::new(&format!("#!lua flags=allow-oom\n{body}"))
}

/// Routes a batch of ingress entries (`lua/route.lua`).
pub(crate) static ROUTE: LazyLock<redis::Script> =
    LazyLock::new(|| writing_script(include_str!("lua/route.lua")));

/// Dead-letters one queue message (`lua/settle_dead.lua`).
pub(crate) static SETTLE_DEAD: LazyLock<redis::Script> =
    LazyLock::new(|| writing_script(include_str!("lua/settle_dead.lua")));

/// Schedules a message's next attempt (`lua/retry_later.lua`).
pub(crate) static RETRY_LATER: LazyLock<redis::Script> =
    LazyLock::new(|| writing_script(include_str!("lua/retry_later.lua")));

/// Reads within bounds (`lua/read.lua`).
pub(crate) static READ: LazyLock<redis::Script> =
    LazyLock::new(|| draining_script(include_str!("lua/read.lua")));

/// Renews the leases of messages being handled (`lua/renew.lua`).
pub(crate) static RENEW: LazyLock<redis::Script> =
    LazyLock::new(|| draining_script(include_str!("lua/renew.lua")));

/// Removes a consumer that holds nothing (`lua/delete_consumer.lua`).
pub(crate) static DELETE_CONSUMER: LazyLock<redis::Script> =
    LazyLock::new(|| draining_script(include_str!("lua/delete_consumer.lua")));

/// The newest entry id of a stream (`lua/last_id.lua`).
pub(crate) static LAST_ID: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/last_id.lua")));

/// A page of dead letters, summarised (`lua/dead_page.lua`).
pub(crate) static DEAD_PAGE: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/dead_page.lua")));

/// Puts a dead letter back on its stream (`lua/dead_replay.lua`).
pub(crate) static DEAD_REPLAY: LazyLock<redis::Script> =
    LazyLock::new(|| plain_writing_script(include_str!("lua/dead_replay.lua")));

/// Acknowledges handled messages and adds what their calls published to
/// the ingress stream, in one step (`lua/ack_publish.lua`).
pub(crate) static ACK_PUBLISH: LazyLock<redis::Script> =
    LazyLock::new(|| writing_script(include_str!("lua/ack_publish.lua")));

/// Writes a key of a queue's key-value buckets (`lua/kv_write.lua`).
pub(crate) static KV_WRITE: LazyLock<redis::Script> =
    LazyLock::new(|| plain_writing_script(include_str!("lua/kv_write.lua")));

/// Deletes a key of a queue's key-value buckets (`lua/kv_delete.lua`).
pub(crate) static KV_DELETE: LazyLock<redis::Script> =
    LazyLock::new(|| plain_writing_script(include_str!("lua/kv_delete.lua")));

/// Whether a partition's streams are drained (`lua/drained.lua`).
pub(crate) static DRAINED: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/drained.lua")));

/// Lists the keys of a bucket (`lua/kv_list.lua`).
pub(crate) static KV_LIST: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/kv_list.lua")));
