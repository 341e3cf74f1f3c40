//! The status view (`GET /api/v1/status`): each virtual service up, degraded or down from
//! its servers' health as the connected engines report it, with the reason.
//!
//! A server's health across engines: down if any connected engine reports it down (a
//! client whose flows land on that engine would miss it), else up if any reports it up,
//! else unknown. Engines that lost the controller do not count: their reports are stale.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ricochet_config::Config;

use crate::types::{
    BgpReport, EngineBgpStatus, HealthState, ServerHealth, ServerStatus, ServiceState, StatusView,
    VirtualServiceStatus,
};

/// The view of `config` (at `revision`) given `reports`: (engine, server health) from
/// connected engines, and `bgp`: (engine, BGP announcement) from connected engines.
pub fn status_view(
    revision: u64,
    config: &Config,
    reports: &[(String, ServerHealth)],
    bgp: &[(String, BgpReport)],
) -> StatusView {
    let mut by_server: BTreeMap<(&str, IpAddr), Vec<(&str, &ServerHealth)>> = BTreeMap::new();
    for (engine, health) in reports {
        by_server
            .entry((health.pool.as_str(), health.ip))
            .or_default()
            .push((engine.as_str(), health));
    }
    let mut virtual_services: Vec<VirtualServiceStatus> = config
        .virtual_services
        .iter()
        .map(|vs| {
            let servers: Vec<ServerStatus> = config
                .pools
                .iter()
                .find(|p| p.name == vs.pool)
                .map(|pool| {
                    pool.servers
                        .iter()
                        .map(|s| {
                            let seen = by_server
                                .get(&(pool.name.as_str(), s.ip))
                                .map(Vec::as_slice)
                                .unwrap_or_default();
                            server_status(s.ip, s.enabled, seen)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (state, reason) = if vs.enabled {
                service_state(&vs.pool, &servers)
            } else {
                (
                    ServiceState::Disabled,
                    "the virtual service is disabled".to_owned(),
                )
            };
            let mut announced_by: Vec<String> = bgp
                .iter()
                .filter(|(_, r)| r.vips.iter().any(|v| v.vip == vs.vip && v.announced))
                .map(|(engine, _)| engine.clone())
                .collect();
            announced_by.sort();
            VirtualServiceStatus {
                name: vs.name.clone(),
                vip: vs.vip,
                pool: vs.pool.clone(),
                state,
                reason,
                servers,
                se_group: vs.se_group.clone(),
                announced_by,
            }
        })
        .collect();
    virtual_services.sort_by(|a, b| a.name.cmp(&b.name));
    let mut bgp: Vec<EngineBgpStatus> = bgp
        .iter()
        .map(|(engine, report)| EngineBgpStatus {
            engine: engine.clone(),
            announcement: report.clone(),
        })
        .collect();
    bgp.sort_by(|a, b| a.engine.cmp(&b.engine));
    StatusView {
        revision,
        virtual_services,
        bgp,
    }
}

fn server_status(ip: IpAddr, enabled: bool, seen: &[(&str, &ServerHealth)]) -> ServerStatus {
    if !enabled {
        return ServerStatus {
            ip,
            enabled,
            state: HealthState::Unknown,
            reason: Some("disabled in its pool: not checked, no new flows".to_owned()),
            since: None,
        };
    }
    let pick = |state: HealthState| -> Vec<&(&str, &ServerHealth)> {
        seen.iter().filter(|(_, h)| h.state == state).collect()
    };
    let (state, chosen) = [HealthState::Down, HealthState::Up, HealthState::Unknown]
        .into_iter()
        .map(|state| (state, pick(state)))
        .find(|(_, v)| !v.is_empty())
        .unwrap_or((HealthState::Unknown, Vec::new()));
    if chosen.is_empty() {
        return ServerStatus {
            ip,
            enabled,
            state,
            reason: Some("no connected engine reports it".to_owned()),
            since: None,
        };
    }
    // Name the engines only when they disagree.
    let unanimous = chosen.len() == seen.len();
    let reason = chosen
        .iter()
        .filter_map(|(engine, h)| {
            h.reason.as_ref().map(|r| {
                if unanimous && seen.len() == 1 {
                    r.clone()
                } else {
                    format!("engine {engine}: {r}")
                }
            })
        })
        .collect::<Vec<_>>()
        .join("; ");
    ServerStatus {
        ip,
        enabled,
        state,
        reason: Some(reason).filter(|r| !r.is_empty()),
        since: chosen.iter().filter_map(|(_, h)| h.since.clone()).min(),
    }
}

fn service_state(pool: &str, servers: &[ServerStatus]) -> (ServiceState, String) {
    let enabled: Vec<&ServerStatus> = servers.iter().filter(|s| s.enabled).collect();
    if enabled.is_empty() {
        return (
            ServiceState::Down,
            format!("pool {pool} has no enabled server: new flows are dropped"),
        );
    }
    let count = |state: HealthState| enabled.iter().filter(|s| s.state == state).count();
    let (up, down, unknown) = (
        count(HealthState::Up),
        count(HealthState::Down),
        count(HealthState::Unknown),
    );
    let total = enabled.len();
    let plural = |n: usize| if n == 1 { "server" } else { "servers" };
    let down_list = || {
        enabled
            .iter()
            .filter(|s| s.state == HealthState::Down)
            .map(|s| match &s.reason {
                Some(r) => format!("{} {r}", s.ip),
                None => s.ip.to_string(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if down == total {
        (
            ServiceState::Down,
            format!(
                "all {total} {} down, new flows are dropped: {}",
                plural(total),
                down_list()
            ),
        )
    } else if down > 0 && up > 0 {
        (
            ServiceState::Degraded,
            format!("{down} of {total} {} down: {}", plural(total), down_list()),
        )
    } else if down > 0 {
        (
            ServiceState::Unknown,
            format!(
                "{down} of {total} {} down, the others not reported yet: {}",
                plural(total),
                down_list()
            ),
        )
    } else if unknown == total {
        (
            ServiceState::Unknown,
            "no connected engine reports its servers yet".to_owned(),
        )
    } else if unknown > 0 {
        (
            ServiceState::Up,
            format!(
                "{up} of {total} {} up, {unknown} not reported yet",
                plural(total)
            ),
        )
    } else {
        (
            ServiceState::Up,
            format!("{up} of {total} {} up", plural(total)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(ip: &str, state: HealthState, reason: &str) -> ServerHealth {
        ServerHealth {
            pool: "web-pool".into(),
            ip: ip.parse().unwrap(),
            state,
            reason: Some(reason.to_owned()),
            since: Some("2025-01-01T00:00:00.000Z".into()),
        }
    }

    fn web_vs(view: &StatusView) -> &VirtualServiceStatus {
        view.virtual_services
            .iter()
            .find(|v| v.name == "web-vs")
            .unwrap()
    }

    #[test]
    fn a_service_is_up_degraded_or_down_from_its_servers() {
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let view = status_view(3, &config, &[], &[]);
        assert_eq!(web_vs(&view).state, ServiceState::Unknown);

        let up = |ip| {
            (
                String::from("se1"),
                health(ip, HealthState::Up, "its monitor is up"),
            )
        };
        let refused = "monitor web-tcp: connection refused";
        let reports = [
            (
                "se1".to_owned(),
                health("192.168.33.10", HealthState::Down, refused),
            ),
            up("192.168.34.10"),
        ];
        let vs = web_vs(&status_view(3, &config, &reports, &[])).clone();
        assert_eq!(vs.state, ServiceState::Degraded);
        assert_eq!(
            vs.reason,
            "1 of 2 servers down: 192.168.33.10 monitor web-tcp: connection refused"
        );
        assert_eq!(vs.servers[0].state, HealthState::Down);
        assert_eq!(vs.servers[1].reason.as_deref(), Some("its monitor is up"));

        let vs = web_vs(&status_view(
            3,
            &config,
            &[up("192.168.33.10"), up("192.168.34.10")],
            &[],
        ))
        .clone();
        assert_eq!(
            (vs.state, vs.reason.as_str()),
            (ServiceState::Up, "2 of 2 servers up")
        );

        let both_down = [
            (
                "se1".to_owned(),
                health("192.168.33.10", HealthState::Down, refused),
            ),
            (
                "se1".to_owned(),
                health("192.168.34.10", HealthState::Down, refused),
            ),
        ];
        let vs = web_vs(&status_view(3, &config, &both_down, &[])).clone();
        assert_eq!(vs.state, ServiceState::Down);
        assert!(
            vs.reason
                .starts_with("all 2 servers down, new flows are dropped: "),
            "{}",
            vs.reason
        );
    }

    #[test]
    fn one_engine_seeing_a_server_down_makes_it_down() {
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let reports = [
            (
                "se1".to_owned(),
                health("192.168.33.10", HealthState::Up, "its monitor is up"),
            ),
            (
                "se2".to_owned(),
                health("192.168.33.10", HealthState::Down, "timeout"),
            ),
        ];
        let vs = web_vs(&status_view(3, &config, &reports, &[])).clone();
        assert_eq!(vs.servers[0].state, HealthState::Down);
        assert_eq!(vs.servers[0].reason.as_deref(), Some("engine se2: timeout"));
        assert_eq!(
            vs.servers[1].reason.as_deref(),
            Some("no connected engine reports it")
        );
    }

    #[test]
    fn the_view_names_the_engines_that_announce_a_vip() {
        use crate::types::{BgpSession, BgpSessionState, VipAnnouncement};
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let report = |announced: bool| BgpReport {
            group: "g1".into(),
            daemon: Some("BIRD 2.0.12".into()),
            error: None,
            sessions: vec![BgpSession {
                peer: "192.168.33.1".parse().unwrap(),
                state: BgpSessionState::Established,
                info: "Established".into(),
                since: None,
            }],
            vips: vec![VipAnnouncement {
                vip: "192.168.35.241".parse().unwrap(),
                announced,
                reason: "why".into(),
            }],
        };
        let bgp = [
            ("se2".to_owned(), report(true)),
            ("se1".to_owned(), report(true)),
            ("se3".to_owned(), report(false)),
        ];
        let view = status_view(3, &config, &[], &bgp);
        assert_eq!(web_vs(&view).announced_by, ["se1", "se2"]);
        let engines: Vec<&str> = view.bgp.iter().map(|b| b.engine.as_str()).collect();
        assert_eq!(engines, ["se1", "se2", "se3"]);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(
            json["bgp"][0]["announcement"]["sessions"][0]["state"],
            "established"
        );
    }
}
