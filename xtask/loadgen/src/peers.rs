//! The filters traffic is compared with, as rule sets installed into a namespace the run
//! created: an nftables per-source meter on the netdev ingress hook (the earliest hook
//! nftables has, before the IP stack) and iptables `hashlimit` in the raw table's PREROUTING
//! chain (the earliest iptables hook, before connection tracking). Both enforce the same
//! per-source packet limit as the traffic class they are compared with: a token bucket of
//! `burst` packets refilled at `rate_per_sec`, IPv4 sources per address and IPv6 sources per
//! /64 (traffic's default aggregation), over-limit packets dropped, the rest accepted.
//!
//! Each installer returns a guard that removes its rules on drop, so one benchmark run can
//! measure the peers in turn on the same interface.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use traffic_testkit::netns::Netns;

/// A per-source packet limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimit {
    /// Packets per second refilled.
    pub rate_per_sec: u32,
    /// Bucket depth in packets.
    pub burst: u32,
    /// Most sources tracked (the set or hash table size).
    pub max_sources: u32,
}

/// Name of the nftables table the meter lives in.
pub const NFT_TABLE: &str = "trfbench";
/// Name of the hashlimit tables (`/proc/net/ipt_hashlimit/…`).
pub const HASHLIMIT_NAME: &str = "trfbench";

/// The nftables ruleset: a netdev table with one ingress chain on `iface`, and a dynamic
/// set per family whose elements carry a `limit` (the meter).
pub fn nft_meter_ruleset(iface: &str, l: SourceLimit) -> String {
    let SourceLimit {
        rate_per_sec: rate,
        burst,
        max_sources: size,
    } = l;
    format!(
        "table netdev {NFT_TABLE} {{
    set m4 {{
        type ipv4_addr
        size {size}
        flags dynamic,timeout
        timeout 60s
    }}
    set m6 {{
        type ipv6_addr
        size {size}
        flags dynamic,timeout
        timeout 60s
    }}
    chain ingress {{
        type filter hook ingress device \"{iface}\" priority 0; policy accept;
        meta protocol ip update @m4 {{ ip saddr limit rate over {rate}/second burst {burst} packets }} drop
        meta protocol ip6 update @m6 {{ ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over {rate}/second burst {burst} packets }} drop
    }}
}}
"
    )
}

/// iptables (and ip6tables) rule arguments after `-t raw -A|-D PREROUTING`.
pub fn hashlimit_rule(l: SourceLimit, v6: bool) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-m".into(),
        "hashlimit".into(),
        "--hashlimit-mode".into(),
        "srcip".into(),
    ];
    if v6 {
        args.extend(["--hashlimit-srcmask".into(), "64".into()]);
    }
    args.extend([
        "--hashlimit-above".into(),
        format!("{}/sec", l.rate_per_sec),
        "--hashlimit-burst".into(),
        l.burst.to_string(),
        "--hashlimit-htable-size".into(),
        l.max_sources.to_string(),
        "--hashlimit-htable-max".into(),
        l.max_sources.to_string(),
        "--hashlimit-name".into(),
        format!("{HASHLIMIT_NAME}{}", if v6 { "6" } else { "" }),
        "-j".into(),
        "DROP".into(),
    ]);
    args
}

fn run(ns: &Netns, program: &str, args: &[String], stdin: Option<&str>) -> Result<()> {
    let mut cmd: Command = ns.command(program)?;
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("write to {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("wait for {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The nftables meter, installed until dropped.
pub struct NftMeter<'a> {
    ns: &'a Netns,
}

impl<'a> NftMeter<'a> {
    /// Install [`nft_meter_ruleset`] in `ns` on `iface` (replacing a leftover table).
    pub fn install(ns: &'a Netns, iface: &str, l: SourceLimit) -> Result<Self> {
        let _ = run(
            ns,
            "nft",
            &[
                "delete".into(),
                "table".into(),
                "netdev".into(),
                NFT_TABLE.into(),
            ],
            None,
        );
        run(
            ns,
            "nft",
            &["-f".into(), "-".into()],
            Some(&nft_meter_ruleset(iface, l)),
        )
        .context("install the nftables meter")?;
        Ok(Self { ns })
    }
}

impl Drop for NftMeter<'_> {
    fn drop(&mut self) {
        let args = [
            "delete".into(),
            "table".into(),
            "netdev".into(),
            NFT_TABLE.into(),
        ];
        if let Err(e) = run(self.ns, "nft", &args, None) {
            eprintln!("warning: {e}");
        }
    }
}

/// The iptables/ip6tables hashlimit rules, installed until dropped.
pub struct Hashlimit<'a> {
    ns: &'a Netns,
    limit: SourceLimit,
}

fn hashlimit_args(op: &str, l: SourceLimit, v6: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-w".into(),
        "-t".into(),
        "raw".into(),
        op.into(),
        "PREROUTING".into(),
    ];
    a.extend(hashlimit_rule(l, v6));
    a
}

impl<'a> Hashlimit<'a> {
    /// Append the rules to the raw table's PREROUTING chain in `ns`.
    pub fn install(ns: &'a Netns, l: SourceLimit) -> Result<Self> {
        run(ns, "iptables", &hashlimit_args("-A", l, false), None)
            .context("install iptables hashlimit")?;
        let guard = Self { ns, limit: l };
        run(ns, "ip6tables", &hashlimit_args("-A", l, true), None)
            .context("install ip6tables hashlimit")?;
        Ok(guard)
    }
}

impl Drop for Hashlimit<'_> {
    fn drop(&mut self) {
        for (program, v6) in [("iptables", false), ("ip6tables", true)] {
            // A rule that was never added (ip6tables failed) is not an error worth a warning.
            let _ = run(
                self.ns,
                program,
                &hashlimit_args("-D", self.limit, v6),
                None,
            );
        }
    }
}

/// `<tool> --version` output (first line), for the report.
pub fn tool_version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|| format!("{program}: not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: SourceLimit = SourceLimit {
        rate_per_sec: 10,
        burst: 10,
        max_sources: 131_072,
    };

    #[test]
    fn nft_ruleset_limits_per_source_on_ingress() {
        let r = nft_meter_ruleset("veth0", L);
        assert!(r.contains("hook ingress device \"veth0\""));
        assert!(
            r.contains("update @m4 { ip saddr limit rate over 10/second burst 10 packets } drop")
        );
        assert!(r.contains("ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 10/second"));
        assert!(r.contains("size 131072"));
    }

    #[test]
    fn hashlimit_rule_matches_the_limit() {
        let a = hashlimit_rule(L, false).join(" ");
        assert_eq!(
            a,
            "-m hashlimit --hashlimit-mode srcip --hashlimit-above 10/sec --hashlimit-burst 10 \
             --hashlimit-htable-size 131072 --hashlimit-htable-max 131072 --hashlimit-name trfbench -j DROP"
        );
        assert!(
            hashlimit_rule(L, true)
                .join(" ")
                .contains("--hashlimit-srcmask 64")
        );
    }
}
