//! Function names: the built-in lists and the configured overrides.
//!
//! A name is settled as read (known not to write or touch session state),
//! write (always sent to the primary, maybe pinning the session), or left
//! unsettled for the caller to look up in `pg_proc`. Write wins over read.

use std::collections::HashSet;

use super::PinCause;

/// Built-in functions that write, touch server state, or only make sense on
/// the primary. Exact names; see [`WRITE_PREFIXES`] for families.
const WRITE_EXACT: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "loread",
    "lowrite",
    "pg_notify",
    "txid_current",
    "pg_current_xact_id",
    "set_config",
    "setseed",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_signal_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_sync_replication_slots",
    "pg_logical_emit_message",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_export_snapshot",
    "pg_log_backend_memory_contexts",
    "pg_import_system_collations",
    "pg_extension_config_dump",
    "gin_clean_pending_list",
    "brin_desummarize_range",
    "pg_stat_force_next_flush",
    "pg_stat_clear_snapshot",
];

/// Prefixes of built-in function families that write or hold server state.
const WRITE_PREFIXES: &[&str] = &[
    "pg_advisory_",
    "pg_try_advisory_",
    "lo_",
    "dblink",
    "pg_stat_reset",
    "pg_stat_statements_reset",
    "pg_create_",
    "pg_copy_",
    "pg_replication_origin_",
    "pg_logical_slot_",
    "pg_file_",
    "brin_summarize_",
    "pg_restore_",
    "pg_clear_",
];

/// Session-level advisory locks live in one server session: taking one pins
/// the client to that server. The `_xact_` variants end with the transaction.
const PIN_ADVISORY: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Functions whose session state cannot be replayed on another server.
const PIN_OTHER: &[&str] = &[
    "set_config",
    "setseed",
    "dblink_connect",
    "dblink_connect_u",
];

/// Built-in functions known not to write (volatile-but-harmless ones such as
/// `random` included), so that most statements need no catalog lookup.
const READ: &[&str] = &[
    // aggregates and window functions
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "any_value",
    "xmlagg",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    "grouping",
    // time
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "date_trunc",
    "date_part",
    "extract",
    "date_bin",
    "age",
    "to_timestamp",
    "to_date",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    "overlaps",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    // strings
    "lower",
    "upper",
    "initcap",
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "substr",
    "substring",
    "position",
    "strpos",
    "overlay",
    "concat",
    "concat_ws",
    "format",
    "to_char",
    "to_number",
    "left",
    "right",
    "lpad",
    "rpad",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "replace",
    "translate",
    "reverse",
    "repeat",
    "split_part",
    "string_to_array",
    "array_to_string",
    "regexp_replace",
    "regexp_match",
    "regexp_matches",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_like",
    "regexp_count",
    "regexp_instr",
    "regexp_substr",
    "starts_with",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "ascii",
    "chr",
    "normalize",
    "is_normalized",
    "like_escape",
    "system_user",
    "xmlexists",
    "pg_collation_for",
    "unistr",
    "to_hex",
    "similar_to_escape",
    "convert_from",
    "convert_to",
    "string_to_table",
    // numbers
    "abs",
    "round",
    "ceil",
    "ceiling",
    "floor",
    "trunc",
    "mod",
    "power",
    "pow",
    "sqrt",
    "cbrt",
    "exp",
    "ln",
    "log",
    "log10",
    "sign",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "div",
    "gcd",
    "lcm",
    "width_bucket",
    "random",
    "random_normal",
    "greatest",
    "least",
    "coalesce",
    "nullif",
    "scale",
    "factorial",
    // uuids
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    // arrays and sets
    "generate_series",
    "generate_subscripts",
    "unnest",
    "array_length",
    "array_lower",
    "array_upper",
    "array_dims",
    "array_ndims",
    "cardinality",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_remove",
    "array_replace",
    "array_position",
    "array_positions",
    "array_fill",
    "trim_array",
    // json and jsonb
    "to_json",
    "to_jsonb",
    "row_to_json",
    "array_to_json",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_typeof",
    "jsonb_typeof",
    "json_strip_nulls",
    "jsonb_strip_nulls",
    "jsonb_set",
    "jsonb_set_lax",
    "jsonb_insert",
    "jsonb_pretty",
    "jsonb_path_query",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "jsonb_path_exists",
    "jsonb_path_match",
    "json_populate_record",
    "jsonb_populate_record",
    "json_to_record",
    "jsonb_to_record",
    "json_to_recordset",
    "jsonb_to_recordset",
    // server and session information
    "version",
    "current_setting",
    "pg_is_in_recovery",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_wal_lsn_diff",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "inet_server_port",
    "inet_server_addr",
    "inet_client_addr",
    "inet_client_port",
    "pg_backend_pid",
    "current_database",
    "current_schema",
    "current_schemas",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_typeof",
    "pg_column_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "pg_database_size",
    "pg_size_pretty",
    "pg_get_viewdef",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_get_functiondef",
    "pg_get_triggerdef",
    "pg_get_expr",
    "pg_get_userbyid",
    "pg_get_serial_sequence",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "pg_function_is_visible",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_function_privilege",
    "has_column_privilege",
    "has_sequence_privilege",
    "pg_has_role",
    "format_type",
    "obj_description",
    "col_description",
    "shobj_description",
    "to_regclass",
    "to_regproc",
    "to_regprocedure",
    "to_regtype",
    "to_regnamespace",
    "to_regrole",
    "pg_encoding_to_char",
    "pg_tablespace_location",
    "txid_current_snapshot",
    "pg_current_snapshot",
    "pg_xact_commit_timestamp",
    "pg_last_committed_xact",
    "pg_stat_get_activity",
    "pg_blocking_pids",
    "pg_notification_queue_usage",
    "pg_listening_channels",
];

/// Built-in reads that ask about the server they run on, or fail on a
/// standby because it is one (`pg_current_wal_*` raise 55000 in recovery):
/// on the read-write port the session's server is the primary, so these go
/// there. `inet_server_addr`/`inet_server_port` are deliberately not here:
/// they show where a statement ran, which is how people watch pgsplit route.
const PRIMARY_ONLY: &[&str] = &[
    "pg_is_in_recovery",
    "pg_backend_pid",
    "pg_last_wal_replay_lsn",
    "pg_last_wal_receive_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_current_wal_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_flush_lsn",
    "pg_walfile_name",
    "pg_walfile_name_offset",
    "pg_is_wal_replay_paused",
    "pg_get_wal_replay_pause_state",
    "pg_postmaster_start_time",
    "pg_conf_load_time",
    "pg_current_logfile",
    "txid_current_snapshot",
    "pg_current_snapshot",
    "txid_current_if_assigned",
    "pg_current_xact_id_if_assigned",
    "pg_xact_commit_timestamp",
    "pg_last_committed_xact",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_notification_queue_usage",
    "pg_listening_channels",
    "pg_lock_status",
    "pg_prepared_xact",
    "pg_get_replication_slots",
    "pg_backend_memory_contexts",
    "pg_get_backend_memory_contexts",
    "pg_control_checkpoint",
    "pg_control_recovery",
    "pg_control_system",
    "pg_control_init",
    "pg_stat_file",
    "pg_read_file",
    "pg_read_binary_file",
];

/// Prefixes of built-in families that read a node's own runtime state.
const PRIMARY_ONLY_PREFIXES: &[&str] = &["pg_stat_get_", "pg_ls_"];

/// Built-in write functions whose effect ends with the session (or that a
/// standby refuses by itself without any effect): the read-only port lets
/// them through (they still pin or fail there as they would directly).
const SESSION_ONLY_WRITES: &[&str] = &["set_config", "setseed", "currval", "lastval"];

/// Settings whose value differs between a primary and a standby, so
/// `current_setting(name)` and `SHOW name` are the primary's question.
pub(crate) const PRIMARY_SETTINGS: &[&str] = &["transaction_read_only", "in_hot_standby"];

/// Views and tables of a node's own runtime state: read on a replica they
/// answer about another machine. The default of `routing.primary_relations`;
/// an entry ending in `*` matches a prefix.
pub const DEFAULT_PRIMARY_RELATIONS: &[&str] = &[
    "pg_stat_*",
    "pg_statio_*",
    "pg_locks",
    "pg_prepared_xacts",
    "pg_replication_slots",
    "pg_replication_origin_status",
    "pg_settings",
    "pg_backend_memory_contexts",
    "pg_file_settings",
    "pg_hba_file_rules",
    "pg_ident_file_mappings",
    "pg_shmem_allocations",
];

/// How one function name settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    Read,
    /// A read the primary must answer on the read-write port (see
    /// [`PRIMARY_ONLY`]).
    PrimaryRead,
    /// A write. `pin`: it also ties the session to its server. `lasting`:
    /// its effect outlasts the statement even on a standby that accepts it
    /// (the read-only port refuses it).
    Write {
        pin: Option<PinCause>,
        lasting: bool,
    },
    /// Not in any list: the caller must look it up. The name is in SQL
    /// identifier syntax (parts joined by `.`, quoted where needed).
    Unknown(Box<str>),
}

/// The configured overrides, normalised to lower case.
#[derive(Debug, Default)]
pub(crate) struct FunctionLists {
    read: HashSet<Box<str>>,
    write: HashSet<Box<str>>,
    /// `routing.primary_relations`: exact names and prefixes (from `x*`).
    primary_relations: HashSet<Box<str>>,
    primary_prefixes: Vec<Box<str>>,
}

impl FunctionLists {
    pub(crate) fn new(read_functions: &[String], write_functions: &[String]) -> Self {
        let norm = |names: &[String]| -> HashSet<Box<str>> {
            names
                .iter()
                .map(|n| {
                    let n = n.trim();
                    // Unquoted names fold to lower case, as PostgreSQL does.
                    if n.contains('"') {
                        n.into()
                    } else {
                        n.to_lowercase().into_boxed_str()
                    }
                })
                .collect()
        };
        let mut lists = FunctionLists {
            read: norm(read_functions),
            write: norm(write_functions),
            ..FunctionLists::default()
        };
        lists.set_primary_relations(DEFAULT_PRIMARY_RELATIONS.iter().copied());
        lists
    }

    /// Replaces the relations whose reads go to the primary.
    pub(crate) fn set_primary_relations<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.primary_relations.clear();
        self.primary_prefixes.clear();
        for name in names {
            let name = name.trim().to_lowercase();
            match name.strip_suffix('*') {
                Some(prefix) => self.primary_prefixes.push(prefix.into()),
                None => {
                    self.primary_relations.insert(name.into());
                }
            }
        }
    }

    /// Whether reading relation `name` (its last name part) is the
    /// primary's business.
    pub(crate) fn primary_relation(&self, name: &str) -> bool {
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        self.primary_relations.contains(name)
            || self.primary_prefixes.iter().any(|p| name.starts_with(&**p))
    }

    /// Settles a function name given as its parts (`["pg_catalog", "nextval"]`),
    /// as the parser produced them (unquoted identifiers already folded).
    pub(crate) fn settle(&self, parts: &[&str]) -> Settled {
        let Some(&last) = parts.last() else {
            return Settled::Write {
                pin: None,
                lasting: false,
            };
        };
        let catalog = parts.len() == 1 || (parts.len() == 2 && parts[0] == "pg_catalog");
        if catalog {
            if let Some(pin) = builtin_write(last) {
                return Settled::Write {
                    pin,
                    lasting: !SESSION_ONLY_WRITES.contains(&last),
                };
            }
        }
        let display = display_name(parts);
        if self.write.contains(display.as_str()) || (catalog && self.write.contains(last)) {
            return Settled::Write {
                pin: None,
                lasting: false,
            };
        }
        if catalog
            && (PRIMARY_ONLY.contains(&last)
                || PRIMARY_ONLY_PREFIXES.iter().any(|p| last.starts_with(p)))
        {
            return Settled::PrimaryRead;
        }
        if self.read.contains(display.as_str()) || (catalog && self.read.contains(last)) {
            return Settled::Read;
        }
        if catalog && READ.contains(&last) {
            return Settled::Read;
        }
        Settled::Unknown(display.into_boxed_str())
    }
}

/// `Some(pin)` when `name` is a built-in write function; `pin` says whether it
/// also ties the session to its server.
fn builtin_write(name: &str) -> Option<Option<PinCause>> {
    let write = WRITE_EXACT.contains(&name)
        || WRITE_PREFIXES.iter().any(|p| name.starts_with(p))
        || PIN_OTHER.contains(&name);
    if !write {
        return None;
    }
    if PIN_ADVISORY.contains(&name) {
        Some(Some(PinCause::AdvisoryLock))
    } else if PIN_OTHER.contains(&name) {
        Some(Some(PinCause::Other))
    } else {
        Some(None)
    }
}

/// Joins name parts in SQL identifier syntax: a part that would not survive
/// case folding or contains a dot or quote is double-quoted.
fn display_name(parts: &[&str]) -> String {
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        let plain = !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !part.starts_with(|c: char| c.is_ascii_digit());
        if plain {
            out.push_str(part);
        } else {
            out.push('"');
            out.push_str(&part.replace('"', "\"\""));
            out.push('"');
        }
    }
    out
}
