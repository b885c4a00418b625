//! Fault injection on upstreams and classes: start, stop, and what is in force.

use std::time::Duration;

use tracing::{info, warn};

use super::OpError;
use crate::{
    api::{ChaosRequest, ChaosStatus},
    engine::Core,
    policy::upstream::ChaosSetting,
};

impl Core {
    /// Start fault injection on an upstream or a class for `duration`.
    pub fn chaos_start(&mut self, req: &ChaosRequest) -> Result<String, OpError> {
        let bad = |m: &str| Err(OpError::Invalid(m.to_owned()));
        if !(0.0..=1.0).contains(&req.drop) || !(0.0..=1.0).contains(&req.reset) {
            return bad("drop and reset are fractions between 0 and 1");
        }
        let duration =
            crate::config::syntax::parse_duration(&req.duration).map_err(OpError::Invalid)?;
        if duration.is_zero() || duration > Duration::from_secs(3600) {
            return bad("duration must be between 1ms and 1h: chaos always expires");
        }
        let setting = ChaosSetting {
            drop_ratio: req.drop,
            reset_ratio: req.reset,
            until_ns: self.dp.now_ns() + duration.as_nanos() as u64,
        };
        let what = match (&req.upstream, &req.class) {
            (Some(name), None) => {
                let u = self
                    .upstreams
                    .iter_mut()
                    .find(|u| &u.spec.name == name)
                    .ok_or_else(|| OpError::NotFound(format!("no upstream named {name}")))?;
                u.chaos = Some(setting);
                format!("upstream {name}")
            }
            (None, Some(class)) => {
                if self.config.class_index(class).is_none() {
                    return Err(OpError::NotFound(format!("no class named {class}")));
                }
                self.class_chaos.insert(class.clone(), setting);
                format!("class {class}")
            }
            _ => return bad("name exactly one of upstream or class"),
        };
        warn!(target_ = %what, drop = req.drop, reset = req.reset, ?duration, "chaos started");
        self.apply_desired()?;
        Ok(format!(
            "chaos on {what}: drop {:.0}%, reset {:.0}% of new connections, for {}",
            req.drop * 100.0,
            req.reset * 100.0,
            crate::config::syntax::format_duration(duration)
        ))
    }

    /// Stop every fault injection now.
    pub fn chaos_stop(&mut self) -> Result<String, OpError> {
        let n =
            self.class_chaos.len() + self.upstreams.iter().filter(|u| u.chaos.is_some()).count();
        self.class_chaos.clear();
        for u in &mut self.upstreams {
            u.chaos = None;
        }
        self.apply_desired()?;
        info!(stopped = n, "chaos stopped");
        Ok(format!("stopped {n} fault injection(s)"))
    }

    /// Fault injections in force, for status.
    pub fn chaos_status(&self) -> Vec<ChaosStatus> {
        let now_ns = self.dp.now_ns();
        let left = |c: &ChaosSetting| c.until_ns.saturating_sub(now_ns) as f64 / 1e9;
        self.upstreams
            .iter()
            .filter_map(|u| u.chaos.map(|c| (format!("upstream:{}", u.spec.name), c)))
            .chain(
                self.class_chaos
                    .iter()
                    .map(|(n, c)| (format!("class:{n}"), *c)),
            )
            .filter(|(_, c)| c.active(now_ns))
            .map(|(target, c)| ChaosStatus {
                target,
                drop_ratio: c.drop_ratio,
                reset_ratio: c.reset_ratio,
                expires_in_seconds: left(&c),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use std::path::Path;

    use crate::{
        api::ChaosRequest, config::Config, dataplane::fake::Fake, engine::Core, ops::OpError,
    };

    fn request(duration: &str) -> ChaosRequest {
        ChaosRequest {
            upstream: None,
            class: Some("default".to_owned()),
            drop: 0.5,
            reset: 0.0,
            duration: duration.to_owned(),
        }
    }

    /// Fails on the main before issue 12: a huge duration panicked the handler (overflow
    /// in the shared duration parser) instead of answering 400 (`OpError::Invalid`).
    #[test]
    fn huge_or_odd_durations_are_invalid_requests_not_panics() {
        let text =
            "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\npackets = { rate = 100 }\n";
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let mut core = Core::new(config, Box::new(Fake::default())).unwrap();
        for bad in [
            "100000000000000000000s",
            "99999999999999999999999999999d",
            "2h",
            "0s",
            "-1s",
            "1e9s",
            "",
        ] {
            match core.chaos_start(&request(bad)) {
                Err(OpError::Invalid(m)) => assert!(!m.is_empty(), "{bad}"),
                other => panic!("{bad}: expected Invalid, got {other:?}"),
            }
        }
        assert!(core.chaos_start(&request("1h")).is_ok());
    }

    /// An idle daemon ticks once a second; class chaos needs the fast tick (its expiry),
    /// and gives it back once stopped.
    #[test]
    fn the_control_tick_is_fast_only_while_there_is_something_to_control() {
        use crate::ops::{CONTROL_TICK, IDLE_CONTROL_TICK};
        let text =
            "[daemon]\ninterfaces = [\"eth0\"]\n[classes.default]\npackets = { rate = 100 }\n";
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        let mut core = Core::new(config, Box::new(Fake::default())).unwrap();
        assert_eq!(core.control_period(), IDLE_CONTROL_TICK);
        core.chaos_start(&request("10s")).unwrap();
        assert_eq!(core.control_period(), CONTROL_TICK);
        core.chaos_stop().unwrap();
        assert_eq!(core.control_period(), IDLE_CONTROL_TICK);
        let with_upstream = format!("{text}[[upstreams]]\nname = \"web\"\nport = 8080\n");
        let config = Config::parse(Path::new("t.toml"), &with_upstream).unwrap();
        let core = Core::new(config, Box::new(Fake::default())).unwrap();
        assert_eq!(core.control_period(), CONTROL_TICK);
    }
}
