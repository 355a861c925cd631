-- Every change to a tenant's row is announced, whoever makes it (the
-- reconciler, a webhook, the internal API, an operator with psql), so that
-- caches of tenants (the resolver's, the internal API's look-ups) drop it at
-- once. What a connection depends on (status, desired state, placement,
-- password) goes on tenant_plane_tenant_changed, where the resolver also
-- closes the tenant's pool; anything else on tenant_plane_tenant_touched.
-- NOTIFY delivers on commit, and a transaction's identical notifications
-- once, so the reconciler's own notify_changed adds nothing.
CREATE FUNCTION tenant_plane_announce_tenant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.status, NEW.desired_state, NEW.db_host_id, NEW.db_name, NEW.db_role,
            NEW.db_password_enc)
           IS NOT DISTINCT FROM
           (OLD.status, OLD.desired_state, OLD.db_host_id, OLD.db_name, OLD.db_role,
            OLD.db_password_enc)
    THEN
        PERFORM pg_notify('tenant_plane_tenant_touched', NEW.id::text);
    ELSE
        PERFORM pg_notify('tenant_plane_tenant_changed', COALESCE(NEW.id, OLD.id)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tenant_registry_announce
    AFTER INSERT OR UPDATE OR DELETE ON tenant_registry
    FOR EACH ROW EXECUTE FUNCTION tenant_plane_announce_tenant();
