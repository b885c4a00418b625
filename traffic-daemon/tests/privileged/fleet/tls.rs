//! `rediss://` with the home cloud's own CA (`[fleet] ca_file`): Redis serves TLS only, the
//! nodes verify its certificate against that CA and share a ban over it.

use std::time::Duration;

use traffic_testkit::daemon::DaemonProcess;

use super::Fleet;
use crate::support::{poll, trafficd};

pub fn a_fleet_over_tls_with_its_own_ca_shares_a_ban() {
    let mut f = Fleet::new_tls("fl-tls");
    f.redis.start();
    f.nodes[0].start();
    f.nodes[1].start();
    f.wait_connected(Duration::from_secs(10));
    f.nodes[0].ok(&["ban", "198.18.1.40", "--for", "10m", "--fleet"]);
    poll("the ban on node 2 over TLS", Duration::from_secs(2), || {
        f.nodes[1]
            .bans()
            .bans
            .into_iter()
            .find(|b| b.prefix.to_string() == "198.18.1.40/32")
    });
    assert_eq!(f.nodes[1].rig.burst(39, 10), 0, "enforced on node 2");
    let view = f.nodes[1].fleet();
    assert!(
        view.url.starts_with("rediss://") && view.connected,
        "{view:?}"
    );

    // A credentials file others may read: the node refuses to start, saying why.
    let creds = f.nodes[2].rig.tmp.path("fleet.credentials");
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let err = DaemonProcess::start(
        &f.nodes[2].rig.topo.node,
        trafficd(),
        &f.nodes[2].rig.config_path(),
        std::path::Path::new(&f.nodes[2].rig.socket()),
        &f.nodes[2].rig.tmp.path("trafficd.log"),
        Duration::from_secs(10),
    )
    .err()
    .expect("refused");
    assert!(format!("{err:#}").contains("chmod 600"), "{err:#}");
}
