-- What each build's sandbox costs, and what it was used for.
-- sandbox_billed_seconds: seconds spent in a state the provider bills (running, resuming, pausing,
-- pause_failed), kept by a trigger so that every statement that moves sandbox_state counts alike;
-- sandbox_billing_since is when the current billed spell began (null when not billing).
-- sandbox_visited_seconds: seconds with a visitor on the preview, written by the preview gateway.
ALTER TABLE jobs
    ADD COLUMN sandbox_billed_seconds double precision NOT NULL DEFAULT 0,
    ADD COLUMN sandbox_billing_since timestamptz,
    ADD COLUMN sandbox_visited_seconds double precision NOT NULL DEFAULT 0;

CREATE FUNCTION jobs_sandbox_billing() RETURNS trigger AS $$
BEGIN
    IF NEW.sandbox_state IN ('running', 'resuming', 'pausing', 'pause_failed') THEN
        NEW.sandbox_billing_since := COALESCE(OLD.sandbox_billing_since, now());
    ELSIF OLD.sandbox_billing_since IS NOT NULL THEN
        NEW.sandbox_billed_seconds := OLD.sandbox_billed_seconds
            + EXTRACT(EPOCH FROM now() - OLD.sandbox_billing_since)::double precision;
        NEW.sandbox_billing_since := NULL;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_sandbox_billing
    BEFORE UPDATE OF sandbox_state ON jobs
    FOR EACH ROW
    WHEN (NEW.sandbox_state IS DISTINCT FROM OLD.sandbox_state)
    EXECUTE FUNCTION jobs_sandbox_billing();
