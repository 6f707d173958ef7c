-- Attribution tags (JSON object of caller-chosen key=value labels) on charges
-- and sessions, and the function calls a session made (tool-call caps).
ALTER TABLE charges ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sessions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sessions ADD COLUMN tool_calls BIGINT NOT NULL DEFAULT 0;
