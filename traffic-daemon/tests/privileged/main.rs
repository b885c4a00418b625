//! The privileged tests: one binary, its cases in one table, the gate stated once.
//!
//! Every case needs root, bpffs and the real eBPF object (not the `AYA_BUILD_SKIP=1` stub),
//! and the cases share kernel state (pins, namespaces, attached programs), so they run one
//! at a time. `main` checks the gate once, before any case, and fails loudly when it does
//! not hold: a skipped case never passes.
//!
//! Why `test = false` (Cargo.toml) and not "exit 0 when not privileged": plain `cargo test`
//! (the unit layer) never builds or runs this binary, so it can neither fail for lack of
//! root nor report a pass for tests it skipped; only an explicit `--test privileged` runs
//! it, and then a missing privilege is an error. `cargo xtask test --layer privileged`
//! runs it as root:
//!
//! ```text
//! cargo test -p traffic-daemon --test privileged -- [FILTER] [--nocapture]
//! cargo test -p traffic-daemon --test privileged -- --list   # no root needed
//! ```
//!
//! `cargo clippy --all-targets` skips a `test = false` target too: lint it with `--test
//! privileged`.
//!
//! The harness is `libtest-mimic`: the usual libtest flags (a name filter, `--exact`,
//! `--nocapture`, `--list`); `--test-threads` is forced to 1.
#![allow(clippy::unwrap_used, reason = "a case fails by panicking")]
// A case function missing from the table below would be dead code: make that an error, so
// no case is silently left out of the run.
#![deny(dead_code)]

mod admission;
mod circuits;
mod cli;
mod contract;
mod e2e;
mod fleet;
mod fuzz;
mod gate;
mod hostile_host;
mod hostile_traffic;
mod hotpath;
mod operator;
mod program;
mod service;
mod support;
mod throttle;

// The table names a case `module::case`: the hostile cases by their own module.
use hostile_host::{apply, gates, instance, links, listeners, restart, walks};
use hostile_traffic::{frames, passive, rescale};
use libtest_mimic::{Arguments, Failed, Trial};

/// A case's body: those that return a `Result` fail with its error, the others by panicking.
trait Outcome {
    fn into_outcome(self) -> Result<(), Failed>;
}

impl Outcome for () {
    fn into_outcome(self) -> Result<(), Failed> {
        Ok(())
    }
}

impl Outcome for anyhow::Result<()> {
    fn into_outcome(self) -> Result<(), Failed> {
        self.map_err(|e| format!("{e:?}").into())
    }
}

/// How long each case that ran took, for the slowest-cases list at the end of a run.
static TIMES: std::sync::Mutex<Vec<(&str, std::time::Duration)>> =
    std::sync::Mutex::new(Vec::new());

/// Runs a case and records how long it took (pass or fail).
fn timed(name: &'static str, case: impl FnOnce() -> Result<(), Failed>) -> Result<(), Failed> {
    let start = std::time::Instant::now();
    let outcome = case();
    TIMES.lock().unwrap().push((name, start.elapsed()));
    outcome
}

/// Prints the slowest cases of the run, so the layer's time can be spent where it goes.
fn print_slowest(count: usize) {
    let mut times = TIMES.lock().unwrap().clone();
    if times.is_empty() {
        return;
    }
    times.sort_by_key(|t| std::cmp::Reverse(t.1));
    let total: std::time::Duration = times.iter().map(|t| t.1).sum();
    println!(
        "\nslowest of {} cases ({:.1} s in all):",
        times.len(),
        total.as_secs_f64()
    );
    for (name, took) in times.iter().take(count) {
        println!("  {:>6.1} s  {name}", took.as_secs_f64());
    }
}

/// The table: case paths (`module::case`, `module::file::case`), each a trial named as its
/// path.
macro_rules! cases {
    ($($first:ident $(:: $rest:ident)+),* $(,)?) => {
        vec![$(
            Trial::test(concat!(stringify!($first) $(, "::", stringify!($rest))+), || {
                timed(
                    concat!(stringify!($first) $(, "::", stringify!($rest))+),
                    || $first $(:: $rest)+ ().into_outcome(),
                )
            }),
        )*]
    };
}

fn cases() -> Vec<Trial> {
    cases![
        contract::maps_match_the_contract,
        contract::every_map_in_the_object_is_in_the_contract,
        contract::program_is_present_and_xdp,
        contract::egress_program_is_present_and_a_classifier,
        program::parse_cases,
        program::verdicts_by_source,
        program::the_last_leaf_rule_never_hides_a_nested_rule,
        program::burst_then_packet_rate_drops,
        program::the_clock_copy_follows_the_kernel_clock_and_a_lie_lasts_a_jiffy,
        program::a_heavy_source_on_credit_passes_its_burst_exactly_and_unspent_credit_is_refunded,
        program::second_source_gets_its_own_bucket,
        program::non_first_fragments_and_cut_l4_are_limited_by_source,
        program::aggregate_v6_prefix_shares_a_bucket,
        program::aggregate_v4_prefix_shares_a_bucket,
        program::byte_limit_drops_with_byte_rate,
        program::global_monitor_mode_counts_would_drops_and_passes,
        program::class_monitor_mode_counts_would_drops_and_passes,
        program::unconfigured_program_passes_everything,
        admission::stacked_limits_the_short_window_binds_first,
        admission::stacked_limits_the_long_window_binds_and_is_checked_before_charging,
        admission::byte_limit_stacked_with_a_packet_limit,
        admission::admission_budget_then_a_shared_overflow_bucket,
        admission::admission_without_overflow_drops_new_sources,
        admission::a_tiny_bucket_map_evicts_instead_of_refusing,
        hostile_traffic::table::spoofed_syns_to_a_limited_port_do_not_refill_a_brute_forcer,
        hostile_traffic::table::an_evicted_heavy_hitter_never_passes_more_than_its_allowance,
        hostile_traffic::table::the_tracked_source_bitmap_forgets_what_it_has_not_seen,
        hostile_traffic::table::a_hammered_sources_refusals_are_counted_in_batches,
        hostile_traffic::table::a_busy_tally_leaves_a_second_source_counted_at_once,
        hostile_traffic::table::the_hinted_walk_finds_a_new_source_within_a_rotation,
        gate::closed_gate_passes_everything,
        gate::open_gate_refuses_new_connections_only,
        gate::half_open_admits_its_budget_then_gates,
        gate::bulkhead_sheds_new_connections_only,
        gate::per_source_new_connection_limit,
        gate::class_override_counts_in_the_overriding_class,
        gate::chaos_resets_drops_and_expires,
        gate::monitor_mode_passes_gated_connections_and_counts_them,
        gate::monitor_mode_half_open_counts_like_enforce,
        gate::reset_is_a_well_formed_rst_ack,
        gate::reset_falls_back_to_drop_for_ip_options_and_extension_headers,
        gate::egress_counts_replies_from_rule_ports,
        gate::rst_checker_accepts_a_correct_rst_and_rejects_a_wrong_ack,
        fuzz::hostile_frames_match_the_reference_classifier,
        fuzz::hostile_frames_through_gates_limits_and_resets_never_abort,
        frames::unreadable_ports_do_not_dodge_an_open_gate,
        frames::a_new_default_class_moves_active_sources_at_once,
        frames::full_size_frames_fit_the_byte_burst,
        rescale::a_saturated_source_gains_nothing_from_twenty_limit_changes,
        cli::a_caller_without_access_to_the_socket_is_told_so,
        e2e::limits_hold_per_class_for_ipv4_and_ipv6_on_both_cpus,
        throttle::pressure_from_a_source_directory_rescales_kernel_limits_and_traffic,
        throttle::real_cpu_load_raises_the_level,
        circuits::stopped_server_opens_the_breaker_and_the_gate_refuses_fast,
        circuits::reset_gate_fails_fast_drop_gate_makes_clients_wait,
        circuits::http_500_trips_the_http_breaker,
        circuits::bulkhead_sheds_past_max_connections,
        circuits::chaos_drops_about_half_and_expires,
        circuits::refusals_seen_at_tc_egress_open_the_breaker_without_probes,
        passive::floods_of_acks_rsts_and_fins_leave_a_healthy_upstream_closed,
        passive::a_stopped_server_opens_within_a_second_but_not_from_one_source,
        passive::a_spoofed_syn_flood_gets_at_most_the_rst_budget,
        passive::a_syn_routed_through_the_node_is_forwarded_not_reset,
        passive::an_address_added_after_start_is_gated_at_once,
        passive::an_idle_daemon_keeps_answering_through_its_quiet_walks,
        service::reload_applies_atomically_keeps_tokens_and_refuses_bad_files,
        service::kill9_with_detach_fails_open_and_a_restart_adopts_the_state,
        service::kill9_with_keep_keeps_enforcing_and_a_restart_takes_over,
        service::prometheus_scrapes_the_metrics,
        service::systemd_notifications_ready_reloading_stopping_and_watchdog,
        listeners::thousands_of_idle_and_slow_connections_leave_the_control_plane_working,
        listeners::a_reader_cannot_control_and_a_file_at_the_socket_path_survives,
        instance::a_second_instance_is_refused_before_it_touches_the_live_maps,
        links::a_deleted_and_recreated_interface_is_reported_then_reattached_within_a_second,
        links::a_missing_interface_at_start_is_attached_when_it_appears,
        links::with_keep_a_recreated_interface_is_pinned_again,
        links::tc_egress_through_netlink_creates_clsact_and_replaces_a_crashed_runs_filter,
        apply::a_10k_rule_swap_leaves_exactly_the_new_rules_and_a_failed_one_the_old,
        gates::a_forced_open_gate_expires_after_kill9_with_keep,
        restart::a_changed_max_sources_keeps_a_saturated_sources_bucket,
        restart::a_restart_over_pins_of_another_abi_starts_fresh_and_enforces,
        restart::a_restart_over_the_earlier_classification_cache_keeps_the_buckets,
        walks::scrapes_and_sources_over_a_full_churning_map_never_stall_the_control_loop,
        operator::suggest::suggestions_land_within_twenty_percent_of_the_designed_rates,
        operator::conventions::lists_ranges_conf_d_json_and_circuit_names_through_the_real_daemon,
        operator::bans::a_banned_address_and_an_ipv6_prefix_are_dropped_until_unbanned,
        operator::bans::a_ban_ends_on_time_with_the_daemon_killed,
        operator::bans::an_allow_rule_wins_unless_the_ban_is_forced,
        operator::bans::bans_survive_a_reload_a_restart_and_lost_pins,
        operator::bans::an_automatic_ban_fires_for_a_flooder_and_not_a_good_source,
        operator::bans::a_client_without_control_access_cannot_ban,
        operator::bans::absurd_bans_are_refused_clearly,
        operator::bans::the_program_drops_a_banned_source_on_every_packet_until_its_end,
        operator::feeds::a_listed_source_is_dropped_and_a_class_feed_moves_a_source,
        operator::feeds::refreshes_swap_atomically_and_failures_keep_the_last_good_list,
        operator::feeds::a_million_prefixes_load_within_bounds,
        operator::feeds::program_feed_verdicts_both_families_and_precedence,
        operator::watch::watch_shows_named_drops_filters_them_and_the_flag_follows_the_watchers,
        operator::watch::the_budget_bounds_a_flood_and_a_stalled_watcher_stalls_nothing,
        fleet::bans::a_fleet_ban_is_enforced_everywhere_within_a_second_with_the_same_end,
        fleet::faults::redis_killed_restarted_empty_and_a_partition_heal_without_losses,
        fleet::bans::an_automatic_ban_of_a_fleet_scoped_class_reaches_the_other_nodes,
        fleet::tls::a_fleet_over_tls_with_its_own_ca_shares_a_ban,
        fleet::budgets::a_client_spread_over_three_nodes_is_held_to_one_fleet_wide_limit,
        fleet::budgets::a_flood_of_a_million_spoofed_sources_adds_no_redis_traffic,
        fleet::hostile::garbage_in_redis_is_refused_bounded_and_a_lie_costs_a_source_at_most_the_cap,
        operator::metrics::a_real_scrape_holds_every_metric_of_the_dashboard,
    ]
}

fn main() {
    let mut args = Arguments::from_args();
    // The cases share kernel state: one at a time, whatever the command line says.
    args.test_threads = Some(1);
    if !args.list {
        // The gate, once: panics with what is missing (root, bpffs, the real object).
        support::require_privileged();
    }
    let conclusion = libtest_mimic::run(&args, cases());
    print_slowest(15);
    conclusion.exit();
}
