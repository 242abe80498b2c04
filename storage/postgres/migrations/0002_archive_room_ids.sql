-- A message is known by its room and id: with --partitions, each partition's
-- stream numbers its own messages, so two rooms' messages may share an id.
-- The primary key's index serves the room's history reads, as messages_room
-- did.
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages ADD PRIMARY KEY (room_id, id);
DROP INDEX messages_room;
