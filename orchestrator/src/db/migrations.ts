/**
 * Versioned schema migrations, applied in order inside one transaction each. Never edit a
 * shipped migration: add the next one.
 *
 * Nouns (used everywhere, after hawkBit): Device, EnrollmentToken, Model, Build, Artifact
 * (one per build × profile), Bundle (a signed artifact), Rollout, RolloutGroup (a wave),
 * Action (one device's part in a rollout).
 */
export const MIGRATIONS: { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
      CREATE TABLE enrollment_tokens (
        token_hash TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        device_id TEXT
      );
      CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        profile TEXT NOT NULL,
        public_key TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        facts TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'offline',
        active_bundle TEXT,
        last_seen TEXT,
        last_heartbeat TEXT,
        desired_seq INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        revoked_at TEXT
      );
      CREATE TABLE models (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        format TEXT NOT NULL,
        opset INTEGER,
        inputs TEXT NOT NULL,
        outputs TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        UNIQUE (name, version)
      );
      CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        model_id TEXT NOT NULL REFERENCES models(id),
        status TEXT NOT NULL,
        profiles TEXT NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT
      );
      CREATE TABLE artifacts (
        build_id TEXT NOT NULL REFERENCES builds(id),
        profile TEXT NOT NULL,
        status TEXT NOT NULL,
        format TEXT,
        precision TEXT,
        bundle_id TEXT,
        size_bytes INTEGER,
        reason TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (build_id, profile)
      );
      CREATE TABLE bundles (
        id TEXT PRIMARY KEY,
        build_id TEXT NOT NULL REFERENCES builds(id),
        profile TEXT NOT NULL,
        manifest TEXT NOT NULL,
        signature TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE rollouts (
        id TEXT PRIMARY KEY,
        build_id TEXT NOT NULL REFERENCES builds(id),
        status TEXT NOT NULL,
        target TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT
      );
      CREATE TABLE rollout_groups (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        position INTEGER NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (rollout_id, position)
      );
      CREATE TABLE actions (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        group_position INTEGER NOT NULL,
        bundle_id TEXT,
        state TEXT NOT NULL,
        code TEXT,
        reason TEXT,
        result TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (rollout_id, device_id)
      );
      CREATE INDEX actions_by_device ON actions(device_id, updated_at);
    `,
  },
  {
    version: 2,
    name: 'build options (acceptance overrides)',
    sql: `ALTER TABLE builds ADD COLUMN options TEXT NOT NULL DEFAULT '{}';`,
  },
  {
    version: 3,
    name: 'datasets and build progress',
    sql: `
      CREATE TABLE datasets (
        id TEXT PRIMARY KEY,
        model_id TEXT NOT NULL REFERENCES models(id),
        kind TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        dtype TEXT NOT NULL,
        shape TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE INDEX datasets_by_model ON datasets(model_id, kind, created_at);
      ALTER TABLE builds ADD COLUMN progress TEXT;
    `,
  },
  {
    version: 4,
    name: 'desired-state seq per action',
    // Re-publishing after a restart must reuse the seq the device already saw, or it would
    // retry a bundle it had refused.
    sql: `ALTER TABLE actions ADD COLUMN desired_seq INTEGER;`,
  },
  {
    version: 5,
    name: 'list order indexes',
    // API lists are keyset pages over (created_at, id); these keep a page an index range scan.
    sql: `
      CREATE INDEX devices_by_created ON devices(created_at, id);
      CREATE INDEX models_by_created ON models(created_at, id);
      CREATE INDEX builds_by_created ON builds(created_at, id);
      CREATE INDEX rollouts_by_created ON rollouts(created_at, id);
      CREATE INDEX datasets_by_model_created ON datasets(model_id, created_at, id);
    `,
  },
  {
    version: 6,
    name: 'staged rollouts: plan and engine state, waves, members, events, device presence and desired intents',
    // Times the engine compares are integer milliseconds (records.ts EpochMs), so building a
    // snapshot of 1,000 members parses no dates. The old one-wave rollouts keep their `actions`
    // rows and have no plan (plan IS NULL): they stay readable.
    sql: `
      ALTER TABLE rollouts ADD COLUMN plan TEXT;
      ALTER TABLE rollouts ADD COLUMN stream TEXT;
      ALTER TABLE rollouts ADD COLUMN pause TEXT;
      ALTER TABLE rollouts ADD COLUMN created_ms INTEGER;
      ALTER TABLE rollouts ADD COLUMN started_ms INTEGER;
      ALTER TABLE rollouts ADD COLUMN resumed_ms INTEGER;
      ALTER TABLE rollouts ADD COLUMN finished_ms INTEGER;
      ALTER TABLE rollouts ADD COLUMN overrides TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE rollouts ADD COLUMN rollback TEXT;
      ALTER TABLE rollouts ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;

      ALTER TABLE rollout_groups ADD COLUMN name TEXT;
      ALTER TABLE rollout_groups ADD COLUMN opened_ms INTEGER;
      ALTER TABLE rollout_groups ADD COLUMN passed_ms INTEGER;
      ALTER TABLE rollout_groups ADD COLUMN approved_ms INTEGER;
      ALTER TABLE rollout_groups ADD COLUMN tail INTEGER NOT NULL DEFAULT 0;

      -- One device's part in a staged rollout (hawkBit's Action; records.ts RolloutMember).
      CREATE TABLE rollout_members (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        device_id TEXT NOT NULL REFERENCES devices(id),
        stream TEXT NOT NULL,
        -- 1 while the member holds its device's stream (core/rollout-supersede.ts holdsStream).
        open INTEGER NOT NULL,
        profile TEXT NOT NULL,
        wave INTEGER NOT NULL,
        ord INTEGER NOT NULL,
        bundle_id TEXT,
        step TEXT NOT NULL,
        phase TEXT NOT NULL,
        code TEXT,
        reason TEXT,
        joined_ms INTEGER NOT NULL,
        late INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        dispatched_ms INTEGER,
        first_dispatched_ms INTEGER,
        previous_bundle TEXT,
        baseline_p95_ms REAL,
        retry_ms INTEGER,
        withdrawn_ms INTEGER,
        unreached INTEGER NOT NULL,
        report_state TEXT,
        report_code TEXT,
        report_reason TEXT,
        report_device_ms INTEGER,
        started_ms INTEGER,
        active_ms INTEGER,
        ended_ms INTEGER,
        p95_ms REAL,
        finished_ms INTEGER,
        rollback_state TEXT,
        rollback_dispatched_ms INTEGER,
        rollback_report_ms INTEGER,
        rollback_code TEXT,
        -- What the device measured: the newest install report's result, and the rollback's.
        result TEXT,
        rollback_result TEXT,
        PRIMARY KEY (rollout_id, device_id),
        UNIQUE (rollout_id, ord)
      );
      -- One active rollout per device per stream, enforced by the database.
      CREATE UNIQUE INDEX rollout_members_one_open_per_stream ON rollout_members(device_id, stream) WHERE open = 1;
      CREATE INDEX rollout_members_by_device ON rollout_members(device_id, bundle_id);

      -- Every command and engine decision, with the figures that caused it.
      CREATE TABLE rollout_events (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        seq INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        device_id TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (rollout_id, seq)
      );

      ALTER TABLE devices ADD COLUMN online_since_ms INTEGER;
      ALTER TABLE devices ADD COLUMN last_seen_ms INTEGER;
      ALTER TABLE devices ADD COLUMN active_bundle_since_ms INTEGER;
      ALTER TABLE devices ADD COLUMN device_clock_ms INTEGER;
      ALTER TABLE devices ADD COLUMN last_heartbeat_ms INTEGER;
      ALTER TABLE devices ADD COLUMN benchmark_bundle TEXT;
      ALTER TABLE devices ADD COLUMN benchmark_p95_ms REAL;
      ALTER TABLE devices ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
      -- The device's latest desired state: what it should run (written with the decision, before
      -- any IO) and, once signed, the exact message published, so a restart republishes it unchanged.
      -- desired_seq stays the counter of seqs handed out; desired_intent_seq is the latest intent's.
      ALTER TABLE devices ADD COLUMN desired_intent_seq INTEGER;
      ALTER TABLE devices ADD COLUMN desired_rollout TEXT;
      ALTER TABLE devices ADD COLUMN desired_bundle TEXT;
      ALTER TABLE devices ADD COLUMN desired_signed TEXT;
      ALTER TABLE devices ADD COLUMN desired_signed_seq INTEGER;
      -- The online key that signed it: after a key rotation it is signed again, with its seq.
      ALTER TABLE devices ADD COLUMN desired_signed_key TEXT;

      -- The one-wave rollouts' latest desired state per device becomes the device's intent, so a
      -- restart after the upgrade still republishes it (with the seq the device already saw).
      UPDATE devices SET (desired_intent_seq, desired_rollout, desired_bundle) = (
        SELECT a.desired_seq, a.rollout_id, a.bundle_id FROM actions a JOIN rollouts r ON r.id = a.rollout_id
        WHERE a.device_id = devices.id AND a.desired_seq IS NOT NULL AND a.bundle_id IS NOT NULL
        ORDER BY r.created_at DESC, r.id DESC LIMIT 1);
    `,
  },
  {
    version: 7,
    name: 'live inference telemetry',
    // Self-contained (it may be renumbered when branches merge). Times are epoch ms INTEGERs:
    // ranges and buckets compare as integers. Histogram counts are compact JSON (see
    // telemetry/aggregate.ts encodeCounts). telemetry_windows.id is AUTOINCREMENT so ids only
    // grow: the roll-up's "rolled through id N" mark stays true after deletions.
    sql: `
      CREATE TABLE telemetry_windows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        bundle_id TEXT,
        model_name TEXT,
        windows INTEGER NOT NULL,
        ok INTEGER NOT NULL, invalid INTEGER NOT NULL, timeout INTEGER NOT NULL, rejected INTEGER NOT NULL, error INTEGER NOT NULL,
        items INTEGER NOT NULL,
        latency_counts TEXT NOT NULL, latency_sum_us INTEGER NOT NULL,
        queue_counts TEXT NOT NULL, queue_sum_us INTEGER NOT NULL,
        cpu_percent REAL NOT NULL, rss_bytes INTEGER NOT NULL, mem_available_bytes INTEGER NOT NULL, disk_free_bytes INTEGER NOT NULL,
        temperature_c REAL,
        swaps INTEGER NOT NULL, swaps_held INTEGER NOT NULL, held_requests INTEGER NOT NULL, max_hold_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        UNIQUE (device_id, seq)
      );
      -- One index besides the seq key, on time alone: windows arrive roughly in time order, so
      -- it grows at its end (a (device_id, start_ms) index is written all over, a third more per
      -- insert). One device's range reads its rows by the seq key; retention walks the ids,
      -- which grow with the time of receipt.
      CREATE INDEX telemetry_windows_by_time ON telemetry_windows(start_ms);
      CREATE TABLE telemetry_10m (
        device_id TEXT NOT NULL,
        bucket_ms INTEGER NOT NULL,
        bundle_key TEXT NOT NULL,
        windows INTEGER NOT NULL,
        ok INTEGER NOT NULL, invalid INTEGER NOT NULL, timeout INTEGER NOT NULL, rejected INTEGER NOT NULL, error INTEGER NOT NULL,
        items INTEGER NOT NULL,
        latency_counts TEXT NOT NULL, latency_sum_us INTEGER NOT NULL,
        queue_counts TEXT NOT NULL, queue_sum_us INTEGER NOT NULL,
        samples INTEGER NOT NULL,
        cpu_sum REAL NOT NULL, cpu_max REAL, rss_sum INTEGER NOT NULL, rss_max INTEGER, mem_sum INTEGER NOT NULL, mem_min INTEGER,
        disk_sum INTEGER NOT NULL, disk_min INTEGER, temp_samples INTEGER NOT NULL, temp_sum REAL NOT NULL, temp_max REAL,
        swaps INTEGER NOT NULL, swaps_held INTEGER NOT NULL, held_requests INTEGER NOT NULL, max_hold_ms INTEGER NOT NULL,
        longest_sec REAL NOT NULL,
        PRIMARY KEY (device_id, bucket_ms, bundle_key)
      ) WITHOUT ROWID;
      CREATE INDEX telemetry_10m_by_time ON telemetry_10m(bucket_ms);
      CREATE TABLE telemetry_1h (
        device_id TEXT NOT NULL,
        bucket_ms INTEGER NOT NULL,
        bundle_key TEXT NOT NULL,
        windows INTEGER NOT NULL,
        ok INTEGER NOT NULL, invalid INTEGER NOT NULL, timeout INTEGER NOT NULL, rejected INTEGER NOT NULL, error INTEGER NOT NULL,
        items INTEGER NOT NULL,
        latency_counts TEXT NOT NULL, latency_sum_us INTEGER NOT NULL,
        queue_counts TEXT NOT NULL, queue_sum_us INTEGER NOT NULL,
        samples INTEGER NOT NULL,
        cpu_sum REAL NOT NULL, cpu_max REAL, rss_sum INTEGER NOT NULL, rss_max INTEGER, mem_sum INTEGER NOT NULL, mem_min INTEGER,
        disk_sum INTEGER NOT NULL, disk_min INTEGER, temp_samples INTEGER NOT NULL, temp_sum REAL NOT NULL, temp_max REAL,
        swaps INTEGER NOT NULL, swaps_held INTEGER NOT NULL, held_requests INTEGER NOT NULL, max_hold_ms INTEGER NOT NULL,
        longest_sec REAL NOT NULL,
        PRIMARY KEY (device_id, bucket_ms, bundle_key)
      ) WITHOUT ROWID;
      CREATE INDEX telemetry_1h_by_time ON telemetry_1h(bucket_ms);
      CREATE TABLE telemetry_gaps (
        device_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        windows INTEGER NOT NULL,
        lost_windows INTEGER NOT NULL,
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        reason TEXT NOT NULL,
        requests TEXT,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, seq)
      );
      CREATE INDEX telemetry_gaps_by_time ON telemetry_gaps(to_ms);
      CREATE TABLE telemetry_devices (
        device_id TEXT PRIMARY KEY,
        latest_end_ms INTEGER NOT NULL,
        last_received_ms INTEGER NOT NULL,
        pruned_through_seq INTEGER NOT NULL DEFAULT 0
      );
      CREATE TABLE telemetry_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
      );
      INSERT INTO telemetry_state (key, value) VALUES ('rolled_through_id', 0);
    `,
  },
  {
    version: 8,
    name: 'api tokens and the audit log',
    // Tokens are stored as the sha256 of a high-entropy secret (never the secret); a device
    // token names its device. The audit log records every mutating API call, failed ones too.
    sql: `
      CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'device')),
        device_id TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT,
        expires_at TEXT,
        last_used_at TEXT,
        revoked_at TEXT,
        CHECK ((role = 'device') = (device_id IS NOT NULL))
      );
      CREATE INDEX api_tokens_by_created ON api_tokens(created_at, id);
      CREATE TABLE audit_log (
        id TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor_id TEXT,
        actor_name TEXT,
        actor_role TEXT,
        method TEXT NOT NULL,
        route TEXT NOT NULL,
        target_id TEXT,
        status INTEGER NOT NULL,
        error_code TEXT,
        request_id TEXT NOT NULL,
        ip TEXT
      );
      CREATE INDEX audit_by_at ON audit_log(at, id);
      CREATE INDEX audit_by_actor ON audit_log(actor_id, at, id);
      CREATE INDEX audit_by_target ON audit_log(target_id, at, id);
    `,
  },
  {
    version: 9,
    name: 'variant choice measured on the devices',
    // Issue 10. A build made with selection 'device' keeps every candidate that passed the host's
    // budgets as a bundle of its own (build_candidates); canary devices trial them, and what they
    // measured is kept per (profile, bundle, device) with the rollout that measured it, so a later
    // rollout of the build can reuse it. The choice per (rollout, profile) is kept with its figures.
    // A trial grants the device its candidates' bytes (trial_grants, read by isBundleAssigned); a
    // device's desired intent may be a trial (desired_trial: its candidates and rounds, to sign it
    // again after a restart).
    sql: `
      ALTER TABLE builds ADD COLUMN selection TEXT NOT NULL DEFAULT 'host';
      CREATE TABLE build_candidates (
        build_id TEXT NOT NULL REFERENCES builds(id),
        profile TEXT NOT NULL,
        position INTEGER NOT NULL,
        bundle_id TEXT NOT NULL REFERENCES bundles(id),
        format TEXT NOT NULL,
        precision TEXT NOT NULL,
        host_pick INTEGER NOT NULL,
        reference INTEGER NOT NULL,
        reason TEXT NOT NULL,
        metrics TEXT NOT NULL,
        PRIMARY KEY (build_id, profile, position)
      );
      CREATE TABLE trial_results (
        profile TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        device_id TEXT NOT NULL,
        rollout_id TEXT NOT NULL,
        precision TEXT NOT NULL,
        result TEXT,
        agreement TEXT,
        code TEXT,
        reason TEXT,
        measured_ms INTEGER NOT NULL,
        PRIMARY KEY (profile, bundle_id, device_id)
      );
      CREATE TABLE variant_choices (
        rollout_id TEXT NOT NULL REFERENCES rollouts(id),
        build_id TEXT NOT NULL,
        profile TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        precision TEXT NOT NULL,
        cause TEXT NOT NULL,
        chosen_ms INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (rollout_id, profile)
      );
      CREATE INDEX variant_choices_by_build ON variant_choices(build_id, profile, chosen_ms);
      CREATE TABLE trial_grants (
        device_id TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        rollout_id TEXT NOT NULL,
        granted_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, bundle_id, rollout_id)
      );
      ALTER TABLE rollout_members ADD COLUMN trial_state TEXT;
      ALTER TABLE rollout_members ADD COLUMN trial_ms INTEGER;
      ALTER TABLE rollout_members ADD COLUMN trial_ended_ms INTEGER;
      ALTER TABLE rollout_members ADD COLUMN trial_code TEXT;
      ALTER TABLE rollout_members ADD COLUMN trial_reason TEXT;
      ALTER TABLE devices ADD COLUMN desired_trial TEXT;
    `,
  },
];
