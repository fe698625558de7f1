ALTER TABLE jobs DROP COLUMN IF EXISTS sandbox_expires_at;
