//! Cases: see the table in main.rs.
//!
//! Issue 12 item 4: with `on_exit = "keep"` a gate the daemon opened used to be enforced
//! forever after the daemon stopped or crashed. Gate state is now a lease the running
//! daemon renews ([`traffic_common::GATE_LEASE_NS`]); the program treats an expired lease
//! as closed gates, while limits keep enforcing.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use traffic_common::GATE_LEASE_NS;
use traffic_testkit::{
    tcplab::{Connect, TcpServer, connect_in},
    topo::SERVICE_V4,
};

use super::links::Rig;
use crate::support::poll;
use crate::support::trafficctl;

const PORT: u16 = 9100;
/// Long enough for a handshake on the veth, far shorter than a SYN retransmit (1 s): a
/// dropped SYN times out.
const CONNECT: Duration = Duration::from_millis(300);

fn connect(rig: &Rig) -> Connect {
    let addr = SocketAddr::new(IpAddr::V4(SERVICE_V4), PORT);
    connect_in(&rig.topo.hosts[0].ns, addr, CONNECT)
        .expect("client thread")
        .1
}

pub fn a_forced_open_gate_expires_after_kill9_with_keep() {
    let rig = Rig::new("lease", "127.0.0.1:19194");
    rig.write_config(
        "on_exit = \"keep\"",
        &format!(
            "[[upstreams]]\nname = \"web\"\nport = {PORT}\nprobe = \"none\"\ngate = \"drop\"\n"
        ),
    );
    let server = TcpServer::echo(&rig.topo.node, PORT).expect("echo server");
    let mut d = rig.start();
    assert_eq!(connect(&rig), Connect::Connected, "closed gate");
    let (code, _, err) = trafficctl(&[
        "--socket",
        &rig.socket(),
        "circuit",
        "open",
        &PORT.to_string(),
    ]);
    assert_eq!(code, 0, "circuit open: {err}");
    poll(
        "the forced-open gate to refuse",
        Duration::from_secs(3),
        || (connect(&rig) == Connect::TimedOut).then_some(()),
    );

    d.kill9().unwrap();
    let killed = Instant::now();
    assert!(
        rig.topo.xdp_attached(&rig.iface()).unwrap(),
        "keep: still attached"
    );
    assert_eq!(
        connect(&rig),
        Connect::TimedOut,
        "within the lease the gate still refuses"
    );
    assert_eq!(
        rig.burst(1, 40),
        20,
        "limits keep enforcing after the crash"
    );
    let lease = Duration::from_nanos(GATE_LEASE_NS);
    poll(
        "SYNs to pass once the lease expired",
        lease + Duration::from_secs(3),
        || (connect(&rig) == Connect::Connected).then_some(()),
    );
    let took = killed.elapsed();
    // Renewed about every second, so between lease - 1 s and lease after the last renewal.
    assert!(
        took >= lease - Duration::from_millis(1500),
        "the gate closed {took:?} after the kill, before its lease ran out"
    );
    assert!(
        rig.topo.xdp_attached(&rig.iface()).unwrap(),
        "keep: still attached"
    );
    assert_eq!(
        rig.burst(2, 40),
        20,
        "limits still enforce after the gates expired"
    );
    drop(d);
    traffic_daemon::dataplane::kernel::Kernel::remove_pins(&rig.pins.0).unwrap();
    server.stop();
}
