CREATE TABLE backstop_cooldowns (
        key TEXT PRIMARY KEY NOT NULL,
        reason TEXT NOT NULL,
        until_ms BIGINT NOT NULL,
        source TEXT NOT NULL,
        last_error TEXT,
        failures BIGINT NOT NULL,
        fingerprint TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    )