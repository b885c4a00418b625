//! The upstream services of a run and the degradation a profile asks for (a stopped or
//! failing service).

use anyhow::{Context as _, Result};

use crate::{
    admin,
    profile::DegradeMode,
    services::{Behaviour, Kind, Services},
};

use super::Generator;

impl Generator<'_> {
    /// Start the node's upstream services (HTTP for `probe = "http"`, echo otherwise).
    pub fn start_services(&mut self) -> Result<()> {
        let list: Vec<(String, u16, Kind)> = self
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.port, u.kind))
            .collect();
        self.services = Some(Services::start(&self.topo.node, &list)?);
        Ok(())
    }

    /// Change how a service behaves (marked on the timeline).
    pub fn set_service(&mut self, name: &str, b: Behaviour) -> Result<()> {
        self.services
            .as_ref()
            .context("no services running")?
            .set(name, b)?;
        let what = match b {
            Behaviour::Up => "up".to_owned(),
            Behaviour::Down => "stops listening".to_owned(),
            Behaviour::Error => "answers 500".to_owned(),
            Behaviour::Slow(d) => format!("answers after {} ms", d.as_millis()),
        };
        self.mark("note", format!("{name} {what}"));
        Ok(())
    }
    pub(super) fn degrade(&mut self) {
        for i in 0..self.runs.len() {
            let Some(d) = self.runs[i].profile.degrade.clone() else {
                continue;
            };
            let (t, _) = self.runs[i].clock.now();
            let state = self.runs[i].degrade;
            if state == 0 && t >= d.at {
                self.runs[i].degrade = 1;
                let r = match &d.mode {
                    DegradeMode::Down => self.set_service(&d.upstream, Behaviour::Down),
                    DegradeMode::Error => self.set_service(&d.upstream, Behaviour::Error),
                    DegradeMode::Slow(delay) => {
                        self.set_service(&d.upstream, Behaviour::Slow(*delay))
                    }
                    DegradeMode::Chaos { drop, reset } => {
                        admin::chaos(&self.socket, &d.upstream, *drop, *reset, d.length).map(|m| {
                            self.mark("note", m);
                        })
                    }
                };
                if let Err(e) = r {
                    self.mark("note", format!("degrade {} failed: {e:#}", d.upstream));
                }
            } else if state == 1 && t >= d.at + d.length {
                self.runs[i].degrade = 2;
                let r = match &d.mode {
                    DegradeMode::Chaos { .. } => admin::chaos_stop(&self.socket)
                        .map(|()| self.mark("note", format!("{} chaos stopped", d.upstream))),
                    _ => self.set_service(&d.upstream, Behaviour::Up),
                };
                if let Err(e) = r {
                    self.mark("note", format!("restore {} failed: {e:#}", d.upstream));
                }
            }
        }
    }

    /// Put every degraded service back (the end of a run, or an interrupted one).
    pub fn restore_services(&mut self) {
        let mut chaos = false;
        for r in &mut self.runs {
            if r.degrade == 1 {
                r.degrade = 2;
                chaos |= matches!(
                    r.profile.degrade.as_ref().map(|d| &d.mode),
                    Some(DegradeMode::Chaos { .. })
                );
            }
        }
        if chaos {
            let _ = admin::chaos_stop(&self.socket);
        }
        if let Some(s) = &self.services {
            for u in &self.upstreams {
                if s.behaviour(&u.name).is_some_and(|b| b != Behaviour::Up) {
                    let _ = s.set(&u.name, Behaviour::Up);
                }
            }
        }
    }
}
