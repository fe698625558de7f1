-- When the provider will stop the running sandbox: the time just before Slipway set its timeout (create,
-- or a confirmed resume) plus that timeout. Null while paused, once killed, and before any sandbox.
ALTER TABLE jobs ADD COLUMN sandbox_expires_at timestamptz;
