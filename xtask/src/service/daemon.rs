//! Asking the machine about trafficd: its unit's state, its main PID, its admin API
//! (through `trafficctl --json`), and the config the steps write.

use std::time::Duration;

use anyhow::{Context as _, Result};

use super::{
    BURST, CONFIG,
    machine::{CLIENT_NET, Machine, poll},
};
use crate::util;

/// The installed config with the node's interface, the client's class and rule, and the
/// node's pressure off (so the limits under test are not rescaled by this machine's load).
pub fn write_config(m: &Machine, on_exit: &str, rate: i64) -> Result<String> {
    let path = m.path(CONFIG);
    // The shipped file (the install step proved the installed one equal to it).
    let text = std::fs::read_to_string(util::root().join("config/traffic.toml"))?;
    let mut cfg: toml::Table = toml::from_str(&text)?;
    let table = |t: &mut toml::Table, k: &str| -> Result<toml::Table> {
        Ok(t.remove(k)
            .and_then(|v| v.as_table().cloned())
            .unwrap_or_default())
    };
    let mut daemon = table(&mut cfg, "daemon")?;
    daemon.insert(
        "interfaces".into(),
        vec![toml::Value::from(m.node_if.clone())].into(),
    );
    daemon.insert("on_exit".into(), on_exit.into());
    cfg.insert("daemon".into(), daemon.into());
    let mut pressure = table(&mut cfg, "pressure")?;
    let signal: toml::Table = ["cpu", "memory", "io"]
        .iter()
        .map(|r| ((*r).to_owned(), "off".into()))
        .collect();
    pressure.insert("signal".into(), signal.into());
    cfg.insert("pressure".into(), pressure.into());
    let mut classes = table(&mut cfg, "classes")?;
    let svc: toml::Table = toml::from_str(&format!(
        "packets = {{ rate = {rate}, per = \"1m\", burst = {BURST} }}"
    ))?;
    classes.insert("svc".into(), svc.into());
    cfg.insert("classes".into(), classes.into());
    let mut rules = cfg
        .remove("rules")
        .and_then(|r| r.as_array().cloned())
        .unwrap_or_default();
    let rule: toml::Table = toml::from_str(&format!("cidr = \"{CLIENT_NET}\"\nclass = \"svc\""))?;
    rules.insert(0, rule.into());
    cfg.insert("rules".into(), rules.into());
    let text = toml::to_string(&cfg)?;
    std::fs::write(&path, &text).with_context(|| format!("write {CONFIG}"))?;
    Ok(text)
}

pub fn is_active(m: &Machine) -> Result<bool> {
    Ok(m.run(&["systemctl", "is-active", "--quiet", "trafficd"])?
        .status
        .success())
}

pub fn show(m: &Machine, prop: &str) -> Result<String> {
    Ok(
        m.ok(&["systemctl", "show", "-p", prop, "--value", "trafficd"])?
            .trim()
            .to_owned(),
    )
}

pub fn main_pid(m: &Machine) -> Result<u32> {
    show(m, "MainPID")?.parse().context("MainPID")
}

/// Active with a main PID other than `old`: a new daemon has reached READY.
pub fn wait_restarted(m: &Machine, old: u32, timeout: Duration) -> Result<u32> {
    poll("trafficd restarted and active", timeout, || {
        let pid = main_pid(m)?;
        Ok((pid != 0 && pid != old && is_active(m)?).then_some(pid))
    })
}

pub fn json(m: &Machine, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["trafficctl", "--json"];
    all.extend_from_slice(args);
    Ok(serde_json::from_str(&m.ok(&all)?)?)
}

/// (passed, dropped) packets of the test's class.
pub fn counts(m: &Machine) -> Result<(u64, u64)> {
    let v = json(m, &["counters"])?;
    let class = v["classes"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["class"] == "svc"))
        .context("no counters for class svc")?;
    let n = |k: &str| class[k]["packets"].as_u64().unwrap_or(0);
    Ok((n("passed"), n("dropped")))
}

/// Send `n` packets; wait until the counters have seen all of them; returns the change.
pub fn send_counted(m: &Machine, n: u64) -> Result<(u64, u64)> {
    let (p0, d0) = counts(m)?;
    m.send(n)?;
    let (p, d) = poll(
        "the counters to see every packet",
        Duration::from_secs(5),
        || {
            let (p, d) = counts(m)?;
            Ok((p + d >= p0 + d0 + n).then_some((p, d)))
        },
    )?;
    Ok((p - p0, d - d0))
}
