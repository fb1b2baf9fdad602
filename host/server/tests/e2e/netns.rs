//! Network namespaces for multi-host tests: a bridge in the test's own namespace and one namespace
//! per host, each with a veth into the bridge and its own address. Partitions are nftables drops
//! inside a host's namespace. Everything made here is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static LABS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2; scripts/test.sh installs it)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn nft(ns: &str, script: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", script])
        .output()
        .expect("run nft (nftables; scripts/test.sh installs it)");
    assert!(out.status.success(), "nft {script:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A switch with hosts on it.
pub struct Lab {
    bridge: String,
    prefix: String,
    net: [u8; 3],
    hosts: Vec<String>,
}

/// One host: a namespace with one address on the lab's network.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Lab {
    /// A new network 198.18.y.0/24 (the range reserved for network tests, RFC 2544, so it shadows
    /// no real route of the machine) with the test process at .1. Needs root (CI runs as root).
    pub fn new() -> Lab {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert!(euid == 0, "network-namespace tests need root (ip netns, veth, nftables); CI runs them as root");
        let lab = LABS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("f{}{}", pid % 100_000, lab);
        // Distinct per process (and per lab within it, the cluster tests' labs follow one another).
        let net = [198, 18, 1 + ((pid % 50) * 5 + lab % 5) as u8];
        let bridge = format!("{prefix}br");
        // A lab left behind by a killed run of the same pid would be in the way.
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        let lab = Lab { bridge, prefix, net, hosts: Vec::new() };
        ip(&["addr", "add", &format!("{}/24", lab.address(1)), "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        lab
    }

    fn address(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], n)
    }

    /// Adds a host named `name` (a few letters).
    pub fn host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() as u8 + 2;
        let ns = format!("{}{name}", self.prefix);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let (outside, inside) = (format!("{}v{n}", self.prefix), format!("{}p{n}", self.prefix));
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
        ip(&["link", "set", &outside, "master", &self.bridge]);
        ip(&["link", "set", &outside, "up"]);
        ip(&["link", "set", &inside, "netns", &ns]);
        let addr = self.address(n);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inside]);
        ip(&["-n", &ns, "link", "set", &inside, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        Host { ns, ip: addr }
    }

    /// Gives `host` (a host of another lab) a second interface on this lab's network; returns its
    /// address here. The host then has a leg in each network, as a gateway between two zones does.
    pub fn attach(&mut self, host: &Host) -> Ipv4Addr {
        let n = self.hosts.len() as u8 + 2;
        // Counted as a host of this lab for addresses; the namespace stays its own lab's to delete.
        self.hosts.push(String::new());
        let (outside, inside) = (format!("{}v{n}", self.prefix), format!("{}p{n}", self.prefix));
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside]);
        ip(&["link", "set", &outside, "master", &self.bridge]);
        ip(&["link", "set", &outside, "up"]);
        ip(&["link", "set", &inside, "netns", &host.ns]);
        let addr = self.address(n);
        ip(&["-n", &host.ns, "addr", "add", &format!("{addr}/24"), "dev", &inside]);
        ip(&["-n", &host.ns, "link", "set", &inside, "up"]);
        addr
    }
}

impl Host {
    /// `program` run inside this host's namespace (`ip netns exec` execs it: the child's pid is the
    /// program's).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// Drops every packet between this host and `peer`, both ways.
    pub fn partition_from(&self, peer: Ipv4Addr) {
        nft(&self.ns, "add table inet partition");
        nft(&self.ns, "add chain inet partition input { type filter hook input priority 0; policy accept; }");
        nft(&self.ns, "add chain inet partition output { type filter hook output priority 0; policy accept; }");
        nft(&self.ns, &format!("add rule inet partition input ip saddr {peer} drop"));
        nft(&self.ns, &format!("add rule inet partition output ip daddr {peer} drop"));
    }

    /// Removes the partition.
    pub fn heal(&self) {
        nft(&self.ns, "delete table inet partition");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth, and with it the other end.
        for ns in self.hosts.iter().filter(|ns| !ns.is_empty()) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}
