use super::*;
use crate::api::watch::{VerdictLine, WatchQuery};
use traffic_common::{FATE_DROP, Reason, v4_mapped};

fn drop_from(last: u8, reason: Reason) -> WatchEvent {
    WatchEvent {
        addr: v4_mapped([198, 18, 1, last]),
        dport: 9000,
        protocol: 17,
        reason: reason as u8,
        row: 1,
        fate: FATE_DROP,
        ifindex: 7,
        len: 60,
        ..WatchEvent::default()
    }
}

fn filter(q: WatchQuery) -> WatchFilter {
    WatchFilter::parse(&q).unwrap()
}

#[test]
fn the_flags_follow_the_watchers_and_their_drops_only_wish() {
    let hub = Arc::new(Hub::new(4));
    assert_eq!(hub.flags(), 0);
    let drops = filter(WatchQuery {
        drops: Some(true),
        ..WatchQuery::default()
    });
    let a = hub.subscribe(drops.clone()).unwrap();
    assert_eq!(hub.flags(), GLOBAL_WATCH | GLOBAL_WATCH_DROPS);
    let b = hub.subscribe(WatchFilter::default()).unwrap();
    assert_eq!(hub.flags(), GLOBAL_WATCH, "one watcher wants passes too");
    drop(b);
    assert_eq!(hub.flags(), GLOBAL_WATCH | GLOBAL_WATCH_DROPS);
    drop(a);
    assert_eq!(hub.flags(), 0, "off once the last watcher leaves");
}

#[test]
fn closing_ends_every_watch_and_admits_no_more() {
    let hub = Arc::new(Hub::new(4));
    let mut a = hub.subscribe(WatchFilter::default()).unwrap();
    hub.close();
    assert_eq!(hub.flags(), 0);
    assert!(matches!(
        a.lines.try_recv(),
        Err(mpsc::error::TryRecvError::Disconnected)
    ));
    assert!(hub.subscribe(WatchFilter::default()).is_err());
}

#[test]
fn at_most_max_watchers() {
    let hub = Arc::new(Hub::new(1));
    let _a = hub.subscribe(WatchFilter::default()).unwrap();
    assert!(hub.subscribe(WatchFilter::default()).is_err());
    hub.set_max(2);
    assert!(hub.subscribe(WatchFilter::default()).is_ok());
}

#[test]
fn events_go_to_matching_watchers_as_json_lines_with_names() {
    let hub = Arc::new(Hub::new(4));
    hub.set_names(Names {
        classes: vec![None, Some("premium".into())],
        interfaces: vec![(7, "veth-n".into())],
    });
    let mut one = hub
        .subscribe(filter(WatchQuery {
            source: Some("198.18.1.1".into()),
            ..WatchQuery::default()
        }))
        .unwrap();
    let all = hub
        .subscribe(filter(WatchQuery {
            class: Some("premium".into()),
            ..WatchQuery::default()
        }))
        .unwrap();
    hub.publish(
        &[drop_from(1, Reason::PacketRate), drop_from(2, Reason::Deny)],
        1_000_000_000,
    );
    let line = one.lines.try_recv().unwrap();
    assert!(one.lines.try_recv().is_err(), "only 198.18.1.1");
    let v: VerdictLine = serde_json::from_slice(line.strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(v.interface, "veth-n");
    assert_eq!(v.class, "premium");
    assert_eq!(v.reason, "packet_rate");
    assert_eq!(v.time, "1970-01-01T00:00:01.000Z");
    assert_eq!(all.lines.len(), 2);
    assert_eq!(hub.snapshot(WatchState::default()).events, 2);
}

#[test]
fn a_watcher_that_does_not_read_loses_lines_counted_and_others_do_not() {
    let hub = Arc::new(Hub::new(4));
    let slow = hub.subscribe(WatchFilter::default()).unwrap();
    let mut fast = hub.subscribe(WatchFilter::default()).unwrap();
    let events: Vec<WatchEvent> = (0..=255).map(|i| drop_from(i, Reason::Deny)).collect();
    let rounds = QUEUE_LINES / events.len() + 2;
    for _ in 0..rounds {
        hub.publish(&events, 0);
        while fast.lines.try_recv().is_ok() {}
    }
    let s = hub.snapshot(WatchState {
        suppressed: 5,
        ..WatchState::default()
    });
    assert_eq!(s.lost as usize, rounds * events.len() - QUEUE_LINES);
    assert_eq!((s.suppressed, s.watchers), (5, 2));
    assert_eq!(slow.lines.len(), QUEUE_LINES);
    drop(slow);
    assert_eq!(hub.watchers(), 1);
}

#[test]
fn the_metrics_families_carry_the_snapshot() {
    let mut e = Exposition::new();
    render_metrics(
        &mut e,
        &Snapshot {
            events: 3,
            suppressed: 4,
            lost: 5,
            watchers: 1,
        },
    );
    let text = e.finish();
    for line in [
        "traffic_watch_events_total 3",
        "traffic_watch_events_suppressed_total 4",
        "traffic_watch_subscriber_lost_total 5",
        "traffic_watch_subscribers 1",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}
