-- The chat database of the Persistence queue: a table for every message
-- type of the design (seed 000), filled by plugins/persistence through
-- chat_events::store. Apply with `switchyard migrate --config queues.toml`.
--
-- Each row keeps the id of the message that wrote it (message_id) and when
-- (stored_at). Events are keyed by their message id; what has a natural
-- key of its own is keyed by it (chats by chat_guid, ratings by the chat,
-- conversions by site and id, preferences by site and agent). Lists the
-- design does not query on their own (agent ids, custom fields) are jsonb.

CREATE TABLE chat_queue_logs (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    department_id integer NOT NULL,
    number_of_queue integer NOT NULL,
    log_time timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat_starts (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    visitor_id integer NOT NULL,
    chat_or_offline_message_id text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chats (
    chat_guid text PRIMARY KEY,
    message_id text NOT NULL,
    session_id bigint NOT NULL,
    site_id integer NOT NULL,
    agent_ids jsonb NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL,
    visitor_name text,
    visitor_company text,
    visitor_phone text,
    visitor_email text,
    department_id integer,
    agent_comment text,
    chat_type integer,
    missed_chat_status integer,
    new_ticket boolean,
    ticket_id text,
    request_page_url text,
    rating_grade integer,
    custom_fields jsonb NOT NULL,
    attachments jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chats_site_ended ON chats (site_id, ended_at);

CREATE TABLE chat_messages (
    chat_guid text NOT NULL REFERENCES chats ON DELETE CASCADE,
    id integer NOT NULL,
    chat_action integer,
    sender_type integer NOT NULL,
    sender_name text,
    message text,
    sent_at timestamptz NOT NULL,
    PRIMARY KEY (chat_guid, id)
);

CREATE TABLE chat_transfers (
    chat_guid text NOT NULL REFERENCES chats ON DELETE CASCADE,
    seq integer NOT NULL,
    transferred_at timestamptz NOT NULL,
    transfer_type integer NOT NULL,
    from_id integer NOT NULL,
    to_id integer NOT NULL,
    succeeded boolean,
    PRIMARY KEY (chat_guid, seq)
);

CREATE TABLE chat_wrapups (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    agent_id integer NOT NULL,
    chat_guid text NOT NULL,
    category_id integer NOT NULL,
    categories jsonb NOT NULL,
    comment text,
    submitted_at timestamptz NOT NULL,
    custom_fields jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chat_wrapups_chat ON chat_wrapups (chat_guid);

CREATE TABLE chat_ratings (
    chat_guid text PRIMARY KEY,
    message_id text NOT NULL,
    site_id integer NOT NULL,
    rating_grade integer NOT NULL,
    rating_comment text,
    custom_fields jsonb NOT NULL,
    custom_variables jsonb NOT NULL,
    sync_to_remote boolean NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE visits (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    campaign_id integer NOT NULL,
    visit_count integer NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversions (
    site_id integer NOT NULL,
    id integer NOT NULL,
    message_id text NOT NULL,
    conversion_id integer NOT NULL,
    conversion_name text,
    visitor_id bigint NOT NULL,
    chat_guid text,
    department_id integer,
    conversion_value double precision NOT NULL,
    created_at timestamptz NOT NULL,
    accelerate_type integer,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, id)
);

CREATE TABLE bans (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    agent_id integer NOT NULL,
    ban_type integer NOT NULL,
    ip_from_or_visitor_id bigint NOT NULL,
    ip_to bigint,
    comment text,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE offline_messages (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    visitor_id text,
    visitor_name text,
    visitor_email text,
    visitor_company text,
    visitor_phone text,
    session_id bigint,
    ticket_id integer,
    route_to_id integer,
    route_to_type integer,
    segments jsonb NOT NULL,
    attachment_name text,
    custom_fields jsonb NOT NULL,
    custom_variables jsonb NOT NULL,
    title text,
    content text,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_status_logs (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    agent_id integer NOT NULL,
    status integer NOT NULL,
    changed_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agent_preferences (
    site_id integer NOT NULL,
    agent_id integer NOT NULL,
    message_id text NOT NULL,
    columns jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, agent_id)
);

CREATE TABLE agent_replies (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    from_agent_id integer NOT NULL,
    to_agent_id integer NOT NULL,
    replied_at timestamptz NOT NULL,
    content text,
    attachment_guid text,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE canned_message_uses (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    chat_guid text NOT NULL,
    agent_id integer NOT NULL,
    canned_message_id integer NOT NULL,
    used_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE auto_invitation_logs (
    message_id text PRIMARY KEY,
    -- autoinvitation.log, .accepted or .refused
    event text NOT NULL,
    site_id integer NOT NULL,
    campaign_id integer NOT NULL,
    invitation_id integer NOT NULL,
    set_number integer NOT NULL,
    accept_number integer NOT NULL,
    refuse_number integer NOT NULL,
    logged_at timestamptz NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE manual_invitation_logs (
    message_id text PRIMARY KEY,
    site_id integer NOT NULL,
    agent_id integer NOT NULL,
    status integer NOT NULL,
    transcript_type integer NOT NULL,
    transcript_id integer NOT NULL,
    message text,
    stored_at timestamptz NOT NULL DEFAULT now()
);
