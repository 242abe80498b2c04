-- Read positions: how far each user has read each room, the id of the
-- newest message read. A position outlives its membership, as it did in
-- JetStream KV, where they were kept before this table: a member who
-- leaves and joins again reads on from where they were.
--
-- Changes are announced on the same channel as rooms and members, in
-- commit order, so that the nodes holding a room keep its positions
-- current; positions are small, so a payload always fits.
CREATE TABLE read_positions (
    room_id text NOT NULL CHECK (room_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    user_id text NOT NULL CHECK (user_id <> '' AND octet_length(user_id) <= 1024),
    pos     bigint NOT NULL CHECK (pos >= 0),
    PRIMARY KEY (room_id, user_id)
);

CREATE FUNCTION chatd_notify_read() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    o jsonb;
    n jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        o := jsonb_build_object('room', OLD.room_id, 'user', OLD.user_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        n := jsonb_build_object('room', NEW.room_id, 'user', NEW.user_id, 'pos', NEW.pos);
    END IF;
    PERFORM pg_notify('chatd:' || left(TG_TABLE_SCHEMA, 57), jsonb_build_object(
        'xid', pg_current_xact_id()::text, 'table', TG_TABLE_NAME, 'old', o, 'new', n)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER read_positions_notify AFTER INSERT OR UPDATE OR DELETE ON read_positions
    FOR EACH ROW EXECUTE FUNCTION chatd_notify_read();
CREATE TRIGGER read_positions_notify_truncate AFTER TRUNCATE ON read_positions
    FOR EACH STATEMENT EXECUTE FUNCTION chatd_notify_truncate();

-- Data taken over once from elsewhere, by name (read positions from
-- JetStream KV): a node that finds its name here does not take it again.
CREATE TABLE chatd_imports (
    name    text PRIMARY KEY,
    rows    bigint NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now()
);
