-- The warm pool: databases cloned ahead of need on each host, with their
-- NOLOGIN roles, so that organization.created takes one by renaming it
-- instead of waiting for a clone. A spare's database and login role are
-- both named `name` (`<prefix>spare_<24 hex>`), its owner role
-- `<name>_owner`; a claim renames all three to the tenant's names.
--
--   building  being cloned by a refill task (lease_expires_at: its lease;
--             one that lapsed was a crashed build and is dropped)
--   ready     complete at template_version, never connected to
--   claimed   taken by tenant_id; renamed on the host, then deleted here
--   retiring  being dropped (behind the template, or its host draining)
CREATE TABLE warm_spares (
    id uuid PRIMARY KEY,
    db_host_id uuid NOT NULL REFERENCES db_hosts (id),
    name text NOT NULL UNIQUE,
    state text NOT NULL CHECK (state IN ('building', 'ready', 'claimed', 'retiring')),
    template_version integer,
    -- The login role's password, AES-GCM-sealed bound to the spare's id and
    -- name; a claim seals it again for the tenant, so taking a spare needs
    -- no new SCRAM verifier.
    password_enc bytea,
    tenant_id uuid UNIQUE REFERENCES tenant_registry (id),
    lease_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    ready_at timestamptz,
    claimed_at timestamptz,
    CHECK ((state = 'claimed') = (tenant_id IS NOT NULL)),
    CHECK (state <> 'ready' OR (template_version IS NOT NULL AND password_enc IS NOT NULL))
);

CREATE INDEX warm_spares_host_state ON warm_spares (db_host_id, state);

COMMENT ON TABLE warm_spares IS
    'Spare tenant databases cloned ahead (tenants.warm_pool per host); they count against db_hosts.capacity';
