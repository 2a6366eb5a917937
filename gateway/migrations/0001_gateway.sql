-- The gateway's tables: API keys (SHA-256 digests only), each tenant's identity provider for end-user tokens, and
-- the Slack workspaces installed for tenants. Row-level security on agentmesh.tenant (mesh.db.tenant_tx) guards
-- every table; the app role is neither owner nor BYPASSRLS.

-- API keys: `amk.<tenant>.<key_id>.<secret>`; the row is found by (tenant, key_id) and the digest of the whole key
-- compared in constant time. The plaintext is shown once, at creation, and never stored.
CREATE TABLE api_keys (
    tenant_id    text NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    key_id       text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    digest       bytea NOT NULL CHECK (length(digest) = 32),
    assert_users boolean NOT NULL DEFAULT false,  -- may name the end user itself (x-agentmesh-user)
    description  text NOT NULL DEFAULT '',
    create_time  timestamptz NOT NULL DEFAULT now(),
    revoke_time  timestamptz,
    PRIMARY KEY (tenant_id, key_id)
);

-- The tenant's identity provider: end-user JWTs are verified against its keys (inline JWKS or a JWKS URL).
CREATE TABLE identity_providers (
    tenant_id   text PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    issuer      text NOT NULL,
    audience    text NOT NULL,
    jwks        jsonb,
    jwks_url    text,
    email_claim text NOT NULL DEFAULT 'email',
    update_time timestamptz NOT NULL DEFAULT now(),
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);

-- Slack workspaces installed for a tenant (the multi-workspace installation store); the bot token is Fernet
-- ciphertext, the key never enters the database.
CREATE TABLE slack_installations (
    team_id       text PRIMARY KEY,
    tenant_id     text NOT NULL CHECK (tenant_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    enterprise_id text NOT NULL DEFAULT '',
    app_id        text NOT NULL DEFAULT '',
    bot_id        text NOT NULL DEFAULT '',
    bot_user_id   text NOT NULL DEFAULT '',
    bot_scopes    text[] NOT NULL DEFAULT '{}',
    bot_token     bytea NOT NULL,
    install_time  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slack_installations_tenant ON slack_installations (tenant_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'identity_providers', 'slack_installations'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I '
                       'USING (tenant_id = current_setting(''agentmesh.tenant'', true)) '
                       'WITH CHECK (tenant_id = current_setting(''agentmesh.tenant'', true))', t);
        EXECUTE format('CREATE POLICY owner_maintenance ON %I TO %I USING (true) WITH CHECK (true)', t, current_user);
    END LOOP;
END $$;

-- The tenant a Slack workspace belongs to: the one question asked before the tenant is known (team id only).
CREATE FUNCTION slack_tenant(team text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = gateway, pg_temp AS $$
    SELECT tenant_id FROM slack_installations WHERE team_id = team
$$;

REVOKE ALL ON FUNCTION slack_tenant(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA gateway TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE ON api_keys TO agentmesh_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON identity_providers, slack_installations TO agentmesh_app;
GRANT EXECUTE ON FUNCTION slack_tenant(text) TO agentmesh_app;
