-- chatd's schema: rooms, memberships and the message archive.
--
-- Every change to rooms and room_members is announced with NOTIFY on the
-- channel "chatd:<schema>", so that each chatd node keeps its
-- in-memory mirror current, also when rows are changed in SQL by hand.
-- Payloads carry the transaction id so that a node can tell which changes a
-- snapshot it loaded already holds. Column sizes are bounded so that a
-- payload always fits NOTIFY's 8000 bytes.

CREATE TABLE rooms (
    id         text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name       text NOT NULL CHECK (octet_length(name) <= 1024),
    created_by text NOT NULL CHECK (octet_length(created_by) <= 1024),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE room_members (
    room_id   text NOT NULL CHECK (room_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    user_id   text NOT NULL CHECK (user_id <> '' AND octet_length(user_id) <= 1024),
    role      text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);

CREATE INDEX room_members_user ON room_members (user_id);

CREATE FUNCTION chatd_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
BEGIN
    IF TG_TABLE_NAME = 'rooms' THEN
        IF TG_OP <> 'INSERT' THEN
            o := jsonb_build_object('id', OLD.id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            n := jsonb_build_object('id', NEW.id, 'name', NEW.name, 'createdBy', NEW.created_by,
                'at', (extract(epoch FROM NEW.created_at) * 1000000)::bigint);
        END IF;
    ELSE
        IF TG_OP <> 'INSERT' THEN
            o := jsonb_build_object('room', OLD.room_id, 'user', OLD.user_id);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            n := jsonb_build_object('room', NEW.room_id, 'user', NEW.user_id, 'role', NEW.role,
                'at', (extract(epoch FROM NEW.joined_at) * 1000000)::bigint);
        END IF;
    END IF;
    PERFORM pg_notify('chatd:' || left(TG_TABLE_SCHEMA, 57), jsonb_build_object(
        'xid', pg_current_xact_id()::text, 'table', TG_TABLE_NAME, 'old', o, 'new', n)::text);
    RETURN NULL;
END
$$;

-- TRUNCATE fires no row triggers: the nodes reload everything instead.
CREATE FUNCTION chatd_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('chatd:' || left(TG_TABLE_SCHEMA, 57), jsonb_build_object(
        'xid', pg_current_xact_id()::text, 'table', TG_TABLE_NAME, 'truncate', true)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER rooms_notify AFTER INSERT OR UPDATE OR DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION chatd_notify_change();
CREATE TRIGGER rooms_notify_truncate AFTER TRUNCATE ON rooms
    FOR EACH STATEMENT EXECUTE FUNCTION chatd_notify_truncate();
CREATE TRIGGER room_members_notify AFTER INSERT OR UPDATE OR DELETE ON room_members
    FOR EACH ROW EXECUTE FUNCTION chatd_notify_change();
CREATE TRIGGER room_members_notify_truncate AFTER TRUNCATE ON room_members
    FOR EACH STATEMENT EXECUTE FUNCTION chatd_notify_truncate();

-- The archive: every room message, copied from the JetStream stream
-- CHAT_MESSAGES. The id is the stream sequence, so a redelivered message
-- never makes a second row. data is the stream message's body as stored;
-- the other columns are read out of it for queries.
CREATE TABLE messages (
    id         bigint PRIMARY KEY,
    room_id    text NOT NULL,
    user_id    text NOT NULL,
    message    text NOT NULL,
    created_at timestamptz NOT NULL,
    stored_at  timestamptz NOT NULL,
    data       bytea NOT NULL,
    -- 'simple': no language's stemming or stop words; words match as typed.
    -- The length bound keeps the vector under PostgreSQL's 1 MB limit.
    search     tsvector GENERATED ALWAYS AS (to_tsvector('simple', left(message, 65536))) STORED
);

CREATE INDEX messages_room ON messages (room_id, id);
CREATE INDEX messages_search ON messages USING gin (search);
