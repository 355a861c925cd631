-- Provisioning: template versions per host, encrypted tenant role passwords,
-- and the control database closed to tenant roles.

-- The tenant template migrations applied to each host's template database.
CREATE TABLE template_versions (
    db_host_id  uuid NOT NULL REFERENCES db_hosts (id),
    version     integer NOT NULL,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (db_host_id, version)
);

-- AES-256-GCM (nonce || ciphertext) of the tenant role's password, under the
-- key in `crypto.key`. Never the password itself.
ALTER TABLE tenant_registry ADD COLUMN db_password_enc bytea;

-- Tenant roles live on the same servers: they must not reach the control
-- plane (PUBLIC has CONNECT on a new database by default).
DO $$
BEGIN
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
