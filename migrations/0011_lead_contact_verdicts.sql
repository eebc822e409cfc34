-- Each lead's contact verdicts: its phone in E.164 and its email normalised, or NULL when the
-- value is invalid, next to the raw value they were computed from. A run validates only the
-- values that changed since (phonenumbers and email-validator cost 20-100 µs a value); erasing
-- a lead erases its verdicts.
CREATE TABLE lead_contact_verdicts (
    lead_id          uuid PRIMARY KEY REFERENCES leads (id) ON DELETE CASCADE,
    phone            text,
    phone_e164       text,
    email            text,
    email_normalized text,
    checked_at       timestamptz NOT NULL DEFAULT now()
);
