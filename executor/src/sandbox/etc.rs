//! The contents of the `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`
//! the sandbox binds over the root's own files (written to a per-run
//! temporary directory, never into the root).

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;

/// Where systemd-resolved keeps the upstream servers behind 127.0.0.53.
const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// `/etc/hosts`: localhost, the hostname, then the extra hosts in order.
pub(crate) fn hosts(hostname: &str, extra: &[(String, IpAddr)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost");
    if !hostname.is_empty() && hostname != "localhost" {
        text.push('\t');
        text.push_str(hostname);
    }
    text.push_str("\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, address) in extra {
        let _ = writeln!(text, "{address}\t{name}");
    }
    text
}

/// `/etc/hostname`.
pub(crate) fn hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

fn is_loopback_nameserver(line: &str) -> bool {
    let mut words = line.split_whitespace();
    words.next() == Some("nameserver")
        && words
            .next()
            .and_then(|address| address.parse::<IpAddr>().ok())
            .is_some_and(|address| address.is_loopback())
}

fn is_nameserver(line: &str) -> bool {
    line.split_whitespace().next() == Some("nameserver")
}

/// The host's `/etc/resolv.conf` with loopback nameservers (a local stub
/// resolver the sandbox cannot reach in its own network namespace, or that
/// listens only on the host's) replaced by `upstream`'s nameservers when it
/// has any; otherwise the host's file unchanged.
pub(crate) fn resolv_conf_from(host: &str, upstream: Option<&str>) -> String {
    if !host.lines().any(is_loopback_nameserver) {
        return host.to_owned();
    }
    let servers: Vec<&str> = upstream
        .unwrap_or_default()
        .lines()
        .filter(|line| is_nameserver(line) && !is_loopback_nameserver(line))
        .collect();
    if servers.is_empty() {
        return host.to_owned();
    }
    let mut text = String::new();
    let mut replaced = false;
    for line in host.lines() {
        if is_loopback_nameserver(line) {
            if !replaced {
                for server in &servers {
                    text.push_str(server);
                    text.push('\n');
                }
                replaced = true;
            }
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// [`resolv_conf_from`] with the host's files.
pub(crate) fn resolv_conf() -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let upstream = fs::read_to_string(RESOLVED_UPSTREAM).ok();
    resolv_conf_from(&host, upstream.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lists_localhost_the_hostname_and_extra_hosts() {
        let text = hosts("builder", &[("db".to_owned(), "10.0.0.2".parse().unwrap())]);
        assert_eq!(
            text,
            "127.0.0.1\tlocalhost\tbuilder\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.2\tdb\n"
        );
    }

    #[test]
    fn loopback_nameservers_are_replaced_by_the_upstream_ones() {
        let host = "# stub\nnameserver 127.0.0.53\noptions edns0\nsearch lan\n";
        let upstream = "nameserver 192.168.1.1\nnameserver 127.0.0.1\nnameserver 1.1.1.1\n";
        assert_eq!(
            resolv_conf_from(host, Some(upstream)),
            "# stub\nnameserver 192.168.1.1\nnameserver 1.1.1.1\noptions edns0\nsearch lan\n"
        );
        assert_eq!(resolv_conf_from(host, None), host);
        let plain = "nameserver 8.8.8.8\n";
        assert_eq!(resolv_conf_from(plain, Some(upstream)), plain);
    }
}
