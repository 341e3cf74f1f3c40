//! The section's Markdown, plots, headlines and CSV, from the measured runs.

use std::fmt::Write as _;

use crate::plot::{bar_chart, BarGroup};
use crate::report::table;
use crate::Ctx;

use super::{Aggregate, CpuUse, Run, System, PROXY_V4, WRK_CONNECTIONS, WRK_THREADS, WRK_TIMEOUT};
use ricochet_testbed::VIP_V4;

pub(super) fn find<'a>(aggs: &'a [Aggregate], size: &str, system: System) -> Option<&'a Aggregate> {
    aggs.iter().find(|a| a.size == size && a.system == system)
}

pub(super) fn size_order(aggs: &[Aggregate]) -> Vec<String> {
    let mut sizes: Vec<String> = Vec::new();
    for a in aggs {
        if !sizes.contains(&a.size) {
            sizes.push(a.size.clone());
        }
    }
    sizes
}

/// `a / b` when both are usable.
pub(super) fn ratio(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

/// A number with `digits` significant digits, without exponent (0.00321, 45.6, 12300).
pub(super) fn sig(v: f64, digits: i32) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

pub(super) fn ms(seconds: f64) -> String {
    format!("{} ms", sig(seconds * 1e3, 3))
}

pub(super) fn mib_per_s(bytes_per_s: f64) -> String {
    format!("{} MiB/s", sig(bytes_per_s / (1024.0 * 1024.0), 3))
}

pub(super) fn headlines(aggs: &[Aggregate]) -> Vec<String> {
    let mut lines = Vec::new();
    for size in size_order(aggs) {
        let (Some(r), Some(n)) = (
            find(aggs, &size, System::Ricochet),
            find(aggs, &size, System::Nginx),
        ) else {
            continue;
        };
        let flag = if r.problems.is_empty() && n.problems.is_empty() {
            ""
        } else {
            " (runs with errors: see the section)"
        };
        lines.push(format!(
            "{size} responses: Ricochet {} req/s vs nginx L4 proxy {} req/s ({}); load balancer \
             host CPU {} vs {} s per 1000 requests ({}){flag}",
            sig(r.requests_per_s, 3),
            sig(n.requests_per_s, 3),
            times(ratio(r.requests_per_s, n.requests_per_s)),
            sig(r.lb_cpu_s_per_1k, 3),
            sig(n.lb_cpu_s_per_1k, 3),
            times(ratio(r.lb_cpu_s_per_1k, n.lb_cpu_s_per_1k)),
        ));
    }
    lines
}

pub(super) fn times(r: Option<f64>) -> String {
    r.map_or("n/a".to_owned(), |r| format!("×{}", sig(r, 3)))
}

pub(super) fn draw(ctx: &Ctx, aggs: &[Aggregate]) -> anyhow::Result<[String; 2]> {
    let names = [System::Ricochet.long_name(), System::Nginx.long_name()];
    let groups = |value: &dyn Fn(&Aggregate) -> f64| -> Vec<BarGroup> {
        size_order(aggs)
            .into_iter()
            .map(|size| BarGroup {
                values: System::BOTH
                    .iter()
                    .map(|&s| find(aggs, &size, s).map(value).filter(|v| v.is_finite()))
                    .collect(),
                label: format!("{size} responses"),
            })
            .collect()
    };
    let rps = "end_to_end_rps.png";
    bar_chart(
        &ctx.plot_path(rps),
        "wrk through the load balancer: requests per second",
        "requests/s",
        &names,
        &groups(&|a| a.requests_per_s),
    )?;
    let cpu = "end_to_end_lb_cpu.png";
    bar_chart(
        &ctx.plot_path(cpu),
        "Load balancer host CPU per 1000 requests",
        "CPU milliseconds per 1000 requests",
        &names,
        &groups(&|a| a.lb_cpu_s_per_1k * 1e3),
    )?;
    Ok([rps.to_owned(), cpu.to_owned()])
}

pub(super) fn runs_csv(runs: &[Run]) -> String {
    let mut csv = String::from(
        "order,size,system,requests,seconds,requests_per_s,bytes_per_s,latency_p50_s,\
         latency_p99_s,socket_errors,non_2xx_3xx,lb_processes_s,lb_napi_s,router_napi_s,\
         servers_s,client_s,ksoftirqd_s,machine_busy_s,machine_softirq_s,wall_s,lb_rx_bytes,\
         lb_tx_bytes,lb_rx_packets,lb_napi_rx_packets,lb_tx_dropped\n",
    );
    for r in runs {
        let w = &r.wrk;
        let c = &r.cpu;
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.4},{:.2},{:.0},{:.6},{:.6},{},{},\
             {:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.3},{:.3},{:.3},{},{},{},{},{}",
            r.order + 1,
            r.size,
            r.system.name(),
            w.requests,
            w.seconds,
            w.requests_per_s,
            w.bytes_per_s,
            w.latency(50.0).unwrap_or(f64::NAN),
            w.latency(99.0).unwrap_or(f64::NAN),
            w.socket_errors.total(),
            w.non_2xx_3xx,
            c.lb_processes,
            c.lb_napi,
            c.router_napi,
            c.servers,
            c.client,
            c.ksoftirqd,
            c.machine_busy,
            c.machine_softirq,
            c.wall,
            r.lb_iface.rx_bytes,
            r.router_port_to_lb.rx_bytes,
            r.lb_iface.rx_packets,
            r.lb_napi_rx_packets,
            r.lb_iface.tx_dropped,
        );
    }
    csv
}

#[allow(clippy::too_many_arguments)]
pub(super) fn markdown(
    ctx: &Ctx,
    aggs: &[Aggregate],
    runs: &[Run],
    idle: &CpuUse,
    seconds: u32,
    warmup: Option<u32>,
    raw: &str,
    csv: &str,
    plots: &[String; 2],
) -> String {
    let mut md = String::new();
    let per_size_runs = runs.len() / size_order(aggs).len().max(1) / 2;
    let _ = writeln!(
        md,
        "wrk on the seed's client fetches `/bytes/1k`, `/bytes/100k` and `/bytes/1m` from nginx \
         on web01 and web02 through a load balancer on se1, the seed's service engine:\n\n\
         - **Ricochet**: `ricochet engine` on se1's interface (native XDP, the engine's defaults \
         otherwise), VIP {VIP_V4}:80 routed to se1 by the router, pool web01 + web02 with \
         `consistent_hash: source_ip_and_port`. Both servers are set up with `ricochet server \
         setup` (VIP on `lo`, eBPF decapsulation): requests are encapsulated to a server, and \
         the responses go from the server to the client through the router, never through \
         se1.\n\
         - **nginx**: nginx's stream module as an L4 (TCP) proxy on se1, listening on \
         {PROXY_V4}:80 (on se1's `lo`, routed to se1 like the VIP), `proxy_pass` to an \
         upstream of web01:80 and web02:80 with `hash $remote_addr$remote_port consistent` \
         (per connection, as Ricochet's pool hashes); `worker_processes auto` (one per CPU), \
         `listen ... reuseport backlog=4096`, `worker_connections 16384`, \
         `worker_rlimit_nofile 65536`, `proxy_connect_timeout 2s`, nginx's defaults otherwise \
         (`proxy_buffer_size 16k`, `tcp_nodelay on`). Ricochet's data plane is detached from \
         se1 for these runs: no XDP program on se1.\n"
    );
    let _ = writeln!(
        md,
        "Both get the same servers and the same wrk parameters (`wrk -t{WRK_THREADS} \
         -c{WRK_CONNECTIONS} -d{seconds}s --timeout {WRK_TIMEOUT} --latency`{warm}): {runs} \
         per system and size, the two systems back to back per size, the one going first \
         alternating{mirror}. Each system is started before its run, must answer a request \
         through it first, and is stopped after it.\n",
        warm = match warmup {
            Some(w) => format!(", after an unmeasured {w} s warm-up run"),
            None => String::new(),
        },
        runs = if per_size_runs == 1 {
            "one run".to_owned()
        } else {
            format!("{per_size_runs} runs")
        },
        mirror = if per_size_runs > 1 {
            " and mirrored (A B B A), so that drift weighs on both alike"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Interfaces (all veth), set as on real NICs where the veth defaults differ: checksum \
         offload on for se1, web01 and web02, TSO off (the \"wire\" carries MTU-sized \
         frames, as a real one does), GRO on se1's interface, and a `pfifo_fast` queueing \
         discipline on it (veth has none: without one, nginx's sends are dropped when the \
         veth's 256-frame ring toward the router is full, instead of being held back). The \
         client's checksum offload stays off (Ricochet encapsulates its packets, which must \
         carry complete checksums). The router's port toward se1 carries an `xdp_pass` \
         program in both cases (the veth driver needs it to deliver XDP_TX frames); because \
         of it the veth driver also turns TSO off on se1, so nginx's sends are segmented by \
         GSO in software, which a real NIC would do in hardware.\n"
    );
    let _ = writeln!(
        md,
        "### How the load balancer host's CPU is counted\n\n\
         All namespaces share one kernel and {cpus} CPUs, so the rule is: the run time \
         (`/proc/<pid>/task/*/schedstat`) of every process in se1's namespace (nginx's master \
         and workers, or Ricochet's engine daemon), plus the kernel's receive processing on \
         se1's interface. That work normally runs in softirq context in whatever task it \
         interrupts; *threaded NAPI* (`echo 1 > /sys/class/net/eth0/threaded`, written from \
         `ip netns exec`, since sysfs shows a namespace's devices only when mounted from \
         inside it) moves it into a kernel thread of its own, `napi/eth0-<id>`, whose run \
         time /proc reports. For Ricochet that thread runs the XDP program on every packet \
         to the VIP; for nginx it runs the TCP/IP receive path for both the client's and the \
         servers' packets (with GRO). The router's port toward se1 gets a NAPI thread too, so \
         that se1's threads wake it rather than do the router's work inline. Each run checks \
         that every packet se1 received went through its NAPI thread (veth's per-queue \
         counters). Not counted for se1: what its packets cost their receivers. The kernel \
         has no `IRQ_TIME_ACCOUNTING`, so softirq work done inline in a task is charged to \
         that task. CPU per 1000 requests = CPU seconds during the run / (requests / 1000), \
         which is also milliseconds per request.\n",
        cpus = crate::sys::cpus(),
    );

    let _ = writeln!(md, "### Results\n");
    let mut rows = Vec::new();
    for size in size_order(aggs) {
        let nginx = find(aggs, &size, System::Nginx);
        for system in System::BOTH {
            let Some(a) = find(aggs, &size, system) else {
                continue;
            };
            let (rps_ratio, cpu_ratio) = match (system, nginx) {
                (System::Ricochet, Some(n)) => (
                    times(ratio(a.requests_per_s, n.requests_per_s)),
                    times(ratio(a.lb_cpu_s_per_1k, n.lb_cpu_s_per_1k)),
                ),
                _ => (String::new(), String::new()),
            };
            let flag = if a.problems.is_empty() { "" } else { " (!)" };
            let rps = if a.runs > 1 {
                format!(
                    "{} ({}-{})",
                    sig(a.requests_per_s, 3),
                    sig(a.requests_per_s_min, 3),
                    sig(a.requests_per_s_max, 3)
                )
            } else {
                sig(a.requests_per_s, 3)
            };
            rows.push(vec![
                size.clone(),
                format!("{}{flag}", system.long_name()),
                rps,
                mib_per_s(a.bytes_per_s),
                ms(a.latency_p50_s),
                ms(a.latency_p99_s),
                sig(a.lb_cpu_s_per_1k, 3),
                rps_ratio,
                cpu_ratio,
            ]);
        }
    }
    md.push_str(&table(
        &[
            "response",
            "load balancer",
            "req/s",
            "transfer",
            "p50 latency",
            "p99 latency",
            "LB host CPU s per 1000 req",
            "req/s Ricochet/nginx",
            "LB CPU Ricochet/nginx",
        ],
        &rows,
    ));
    let _ = writeln!(
        md,
        "\nreq/s is all requests over all runs' time{}; latencies are wrk's percentiles \
         (averaged over runs); transfer is response bytes, headers included, per second. \
         (!) marks a load balancer whose runs had socket errors or non-2xx/3xx responses \
         (listed below). Bars are labelled with their values.\n",
        if per_size_runs > 1 {
            ", with the slowest and the fastest run in parentheses"
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "![requests per second]({})\n\n![load balancer host CPU per 1000 requests]({})\n",
        plots[0], plots[1]
    );

    let problems: Vec<String> = aggs
        .iter()
        .flat_map(|a| {
            a.problems
                .iter()
                .map(move |p| format!("- {} {}, {p}", a.size, a.system.long_name()))
        })
        .collect();
    if problems.is_empty() {
        let _ = writeln!(
            md,
            "Every run completed without socket errors or non-2xx/3xx responses, and all of \
             se1's received packets went through its NAPI thread.\n"
        );
    } else {
        let _ = writeln!(
            md,
            "**Runs with errors** (their figures are doubtful):\n\n{}\n",
            problems.join("\n")
        );
    }

    breakdown(&mut md, aggs, idle);

    let _ = writeln!(
        md,
        "### Caveats\n\n\
         Client, router, servers and load balancer share the machine's {} CPUs: requests \
         per second measure the whole bed, and a load balancer that uses less CPU leaves more \
         to the servers and the client. The load balancer host's CPU per request is the figure \
         that carries over to separate machines. veth is not a NIC: no interrupts, no DMA, \
         no TSO on se1 (see above), and XDP_TX into a veth costs what the peer's NAPI costs; \
         its 256-frame ring drops XDP_TX frames when the router's thread falls behind, where \
         a NIC has a deeper TX ring.{}\n",
        crate::sys::cpus(),
        if ctx.quick {
            " This was a quick run (short runs, one per system and size): the figures are \
             noisy."
        } else {
            ""
        }
    );
    let _ = writeln!(
        md,
        "Raw data: [{raw}]({raw}) (every run with wrk's output, CPU by place, interface \
         counters), [{csv}]({csv})."
    );
    md
}

/// The table of where the CPU went, and the idle check.
fn breakdown(md: &mut String, aggs: &[Aggregate], idle: &CpuUse) {
    let _ = writeln!(
        md,
        "### Where the CPU went\n\n\
         CPU microseconds per request (= milliseconds per 1000 requests) by place; the bytes \
         se1 received and sent per request (its interface's rx; the router port's rx from \
         se1, XDP_TX included); the share of se1's received packets that its NAPI thread \
         handled (veth's per-queue `xdp_packets` over the interface's rx packets; packets \
         arriving between the two counters' readings make it slightly lower than 100%); and \
         the packets se1's interface dropped on the way out per 1000 requests (failed XDP_TX, \
         or the veth's ring toward the router full; TCP retransmits what is lost):\n"
    );
    let mut rows = Vec::new();
    for a in aggs {
        // Seconds per 1000 requests are milliseconds per request; microseconds read better.
        let per = |s: f64| sig(a.per_1k(s) * 1e3, 3);
        rows.push(vec![
            a.size.clone(),
            a.system.name().to_owned(),
            per(a.cpu.lb_processes),
            per(a.cpu.lb_napi),
            per(a.cpu.lb()),
            per(a.cpu.router_napi),
            per(a.cpu.servers),
            per(a.cpu.client),
            per(a.cpu.ksoftirqd),
            per(a.cpu.other()),
            per(a.cpu.machine_busy),
            sig(a.lb_rx_bytes_per_request, 3),
            sig(a.lb_tx_bytes_per_request, 3),
            format!("{}%", sig(a.lb_napi_share * 100.0, 4)),
            sig(a.lb_tx_dropped_per_1k, 3),
        ]);
    }
    md.push_str(&table(
        &[
            "response",
            "LB",
            "se1 processes",
            "se1 NAPI",
            "LB host total",
            "router NAPI (port to se1)",
            "servers' nginx",
            "wrk",
            "ksoftirqd",
            "rest of machine",
            "machine total",
            "se1 rx B/req",
            "se1 tx B/req",
            "se1 rx via NAPI",
            "se1 tx drops per 1000 req",
        ],
        &rows,
    ));
    let _ = writeln!(
        md,
        "\nOutside se1 the columns say where the time was spent, not on whose behalf: \
         interfaces without NAPI (the client's, the servers', the router's other ports) \
         receive from a per-CPU backlog in softirq context, inline in the task that sent the \
         packet, or in `ksoftirqd` when there is too much of it. So the router's NAPI thread \
         also carries the servers' receive of what se1 sent them (and, for nginx, the \
         client's receive of the responses); with Ricochet, the servers' nginx also carries \
         the router's forwarding of the responses and the client's receive of them; wrk \
         carries the router's forwarding of the requests. \"Rest of machine\" is \
         /proc/stat's busy time minus all of the above: other kernel threads, this program, \
         and anything else running on the machine (/proc/stat counts clock ticks, so it can \
         come out slightly negative).\n"
    );
    let _ = writeln!(
        md,
        "Attribution check with no traffic ({:.1} s, nothing running on se1): se1's \
         processes {} s, se1's NAPI thread {} s, the router's {} s; the whole machine {} s \
         busy.\n",
        idle.wall,
        sig(idle.lb_processes, 2),
        sig(idle.lb_napi, 2),
        sig(idle.router_napi, 2),
        sig(idle.machine_busy, 2)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits() {
        assert_eq!(sig(0.0032149, 3), "0.00321");
        assert_eq!(sig(45.66, 3), "45.7");
        assert_eq!(sig(12345.0, 3), "12345");
        assert_eq!(sig(0.0, 3), "0");
        assert_eq!(sig(f64::NAN, 3), "n/a");
        assert_eq!(sig(-0.5, 2), "-0.50");
    }

    #[test]
    fn ratios_need_usable_figures() {
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
    }
}
