//! Ansible inventories as ansible reads them: the JSON of `ansible-inventory -i FILE --list`
//! turned into hosts (their group chains and variables) and each host into the server record it
//! becomes. Shared by the CLI's `server import` and the controller's inventory sources, and the
//! rules for a server's `inventory_groups` that the controller enforces.
//!
//! A host's record: `ansible_host`, `ansible_port`, `ansible_user` and
//! `ansible_ssh_private_key_file` become its columns; `environment`/`env` its environment;
//! `os_type` its OS; group names and datacenter-style vars (`dc`, `datacenter`, `region`, `zone`,
//! `site`, `role`) its tags; everything else its host vars. A host named by DNS only keeps the
//! name as `ansible_host` (the bastion connects through its own DNS) and its `ip_address` is the
//! name resolved on the importing machine.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde_json::Value;
use thiserror::Error;

use crate::{JsonObject, NewServerRequest};

/// The most `ansible-inventory --list` output read (checked before it is parsed).
pub const MAX_LIST_BYTES: usize = 64 << 20;
/// The most hosts one inventory imports.
pub const MAX_HOSTS: usize = 20_000;
/// The most groups one inventory may have.
pub const MAX_GROUPS: usize = 10_000;
/// The most group chains one server has.
pub const MAX_CHAINS: usize = 64;
/// The most groups in one chain, from the top group down to the one listing the host.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// The longest group name.
pub const MAX_GROUP_NAME: usize = 100;

/// Vars that become tags.
const TAG_VARS: &[&str] = &["dc", "datacenter", "region", "zone", "site", "role"];

/// Groups ansible makes itself, left out of chains.
const IMPLICIT_GROUPS: &[&str] = &["all", "ungrouped"];

/// Why a server's group chains are refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GroupsError {
    #[error(
        "group name '{0}' is not valid: a group name is 1 to 100 letters, digits and '_', not starting with a digit"
    )]
    BadName(String),
    #[error("group '{0}' is implicit in every inventory; leave it out of the chains")]
    Implicit(String),
    #[error("a group chain is empty")]
    EmptyChain,
    #[error("{0} group chains; a server is in at most {MAX_CHAINS}")]
    TooManyChains(usize),
    #[error("the group chain {chain} is {depth} groups deep; at most {MAX_CHAIN_DEPTH}")]
    TooDeep { chain: String, depth: usize },
}

/// Whether `name` is a group name Outpost keeps: `^[A-Za-z_][A-Za-z0-9_]{0,99}$`, the names
/// ansible accepts without warning (others it would have to transform).
pub fn valid_group_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && name.len() <= MAX_GROUP_NAME
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a server's group chains (see [`crate::ServerView::inventory_groups`]).
pub fn check_groups(chains: &[Vec<String>]) -> Result<(), GroupsError> {
    if chains.len() > MAX_CHAINS {
        return Err(GroupsError::TooManyChains(chains.len()));
    }
    for chain in chains {
        if chain.is_empty() {
            return Err(GroupsError::EmptyChain);
        }
        if chain.len() > MAX_CHAIN_DEPTH {
            return Err(GroupsError::TooDeep {
                chain: short_chain(chain),
                depth: chain.len(),
            });
        }
        for g in chain {
            if !valid_group_name(g) {
                return Err(GroupsError::BadName(g.clone()));
            }
            if IMPLICIT_GROUPS.contains(&g.as_str()) {
                return Err(GroupsError::Implicit(g.clone()));
            }
        }
    }
    Ok(())
}

/// A chain as `a > b > c`, cut after a few groups (it names a refusal, which must stay short).
fn short_chain(chain: &[String]) -> String {
    let mut s = chain
        .iter()
        .take(MAX_CHAIN_DEPTH + 1)
        .map(|g| g.chars().take(MAX_GROUP_NAME).collect::<String>())
        .collect::<Vec<_>>()
        .join(" > ");
    if chain.len() > MAX_CHAIN_DEPTH + 1 {
        s.push_str(" > …");
    }
    s
}

/// Why an inventory, or a host in it, cannot be read into server records.
#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("the inventory listing is {bytes} bytes; the most read is {MAX_LIST_BYTES}")]
    TooLarge { bytes: usize },
    #[error("the inventory listing is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the inventory listing is not ansible-inventory --list output: {0}")]
    NotAList(&'static str),
    #[error("the inventory has more than {MAX_GROUPS} groups")]
    TooManyGroups,
    #[error("the inventory has more than {MAX_HOSTS} hosts")]
    TooManyHosts,
    #[error("the inventory has no hosts")]
    Empty,
    #[error("group '{group}' is its own ancestor (a cycle of children)")]
    Cycle { group: String },
    #[error("{host}: {source}")]
    Groups { host: String, source: GroupsError },
    #[error("{host}: ansible_port '{port}' is not a number")]
    BadPort { host: String, port: String },
    #[error("{host}: ansible_host '{address}' is neither an IP address nor a DNS name")]
    NotAnAddress { host: String, address: String },
    #[error(
        "{host}: '{name}' does not resolve to an address on this machine ({reason}); give the host an ansible_host with its IP address"
    )]
    Unresolved {
        host: String,
        name: String,
        reason: String,
    },
}

/// One host as ansible reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    /// The inventory name, which becomes the server's hostname.
    pub name: String,
    /// Chains of group names from a top group down to a group that lists the host, `all` and
    /// `ungrouped` left out; sorted, no duplicates.
    pub groups: Vec<Vec<String>>,
    /// Every variable ansible gives the host (group vars merged in, host vars winning).
    pub vars: JsonObject,
}

/// Reads `ansible-inventory --list` output, checking its size before parsing it.
pub fn parse_list(json: &[u8]) -> Result<Vec<Host>, InventoryError> {
    if json.len() > MAX_LIST_BYTES {
        return Err(InventoryError::TooLarge { bytes: json.len() });
    }
    let list: Value = serde_json::from_slice(json)?;
    hosts_from_list(&list)
}

/// One group of the listing: the groups that list it as a child (`all` left out).
#[derive(Default)]
struct Group<'a> {
    parents: Vec<&'a str>,
}

fn names<'a>(v: Option<&'a Value>, what: &'static str) -> Result<Vec<&'a str>, InventoryError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().ok_or(InventoryError::NotAList(what)))
            .collect(),
        Some(_) => Err(InventoryError::NotAList(what)),
    }
}

/// The hosts of a parsed `ansible-inventory --list` document (also the shape Outpost's own
/// INI/YAML reader produces), sorted by name.
pub fn hosts_from_list(list: &Value) -> Result<Vec<Host>, InventoryError> {
    let top = list
        .as_object()
        .ok_or(InventoryError::NotAList("not a JSON object"))?;
    if top.len() > MAX_GROUPS + 1 {
        return Err(InventoryError::TooManyGroups);
    }
    let empty = JsonObject::new();
    let hostvars = match top.get("_meta").and_then(|m| m.get("hostvars")) {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(InventoryError::NotAList("_meta.hostvars is not an object")),
    };
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    let mut hosts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, body) in top {
        if name == "_meta" {
            continue;
        }
        if !body.is_object() && !body.is_null() {
            return Err(InventoryError::NotAList("a group is not an object"));
        }
        let listed = names(body.get("hosts"), "a group's hosts is not a list of names")?;
        for h in &listed {
            if !hosts.contains_key(h) && hosts.len() >= MAX_HOSTS {
                return Err(InventoryError::TooManyHosts);
            }
            hosts.entry(h).or_default().push(name);
        }
        groups.entry(name).or_default();
        for child in names(
            body.get("children"),
            "a group's children is not a list of names",
        )? {
            if name != "all" {
                groups.entry(child).or_default().parents.push(name);
            }
        }
        if groups.len() > MAX_GROUPS {
            return Err(InventoryError::TooManyGroups);
        }
    }
    // Hosts that only have vars (no listing group) are ansible's `ungrouped` ones.
    for h in hostvars.keys() {
        if !hosts.contains_key(h.as_str()) {
            if hosts.len() >= MAX_HOSTS {
                return Err(InventoryError::TooManyHosts);
            }
            hosts.insert(h, Vec::new());
        }
    }
    if hosts.is_empty() {
        return Err(InventoryError::Empty);
    }
    let mut memo: BTreeMap<&str, Chains> = BTreeMap::new();
    let mut out = Vec::with_capacity(hosts.len());
    for (name, direct) in hosts {
        let mut chains: BTreeSet<Vec<String>> = BTreeSet::new();
        for g in direct {
            if IMPLICIT_GROUPS.contains(&g) {
                continue;
            }
            let found = chains_of(g, &groups, &mut memo, &mut Vec::new())?;
            let found = found.map_err(|source| InventoryError::Groups {
                host: name.to_owned(),
                source,
            })?;
            chains.extend(found);
            if chains.len() > MAX_CHAINS {
                return Err(InventoryError::Groups {
                    host: name.to_owned(),
                    source: GroupsError::TooManyChains(chains.len()),
                });
            }
        }
        let vars = match hostvars.get(name) {
            Some(Value::Object(v)) => v.clone(),
            None | Some(Value::Null) => JsonObject::new(),
            Some(_) => return Err(InventoryError::NotAList("a host's vars are not an object")),
        };
        out.push(Host {
            name: name.to_owned(),
            groups: chains.into_iter().collect(),
            vars,
        });
    }
    Ok(out)
}

/// Chains of a group, or why its hosts cannot have them.
type Chains = Result<Vec<Vec<String>>, GroupsError>;

/// Every chain from a top group down to `group`, computed once per group. A cycle fails the
/// whole inventory; a group too deep, too branched or badly named fails its hosts (and so the
/// listing: a refusal ends the read, so an answer that depends on the way here — `path`, the
/// groups below `group` — is never asked for again).
fn chains_of<'a>(
    group: &'a str,
    groups: &BTreeMap<&'a str, Group<'a>>,
    memo: &mut BTreeMap<&'a str, Chains>,
    path: &mut Vec<&'a str>,
) -> Result<Chains, InventoryError> {
    if let Some(known) = memo.get(group) {
        return Ok(known.clone());
    }
    if path.contains(&group) {
        return Err(InventoryError::Cycle {
            group: group.to_owned(),
        });
    }
    if !valid_group_name(group) {
        return Ok(Err(GroupsError::BadName(group.to_owned())));
    }
    if path.len() >= MAX_CHAIN_DEPTH {
        // Deeper than any chain may be whatever lies above: the walk stops here.
        let mut chain: Vec<String> = vec![group.to_owned()];
        chain.extend(path.iter().rev().map(|g| (*g).to_owned()));
        let depth = chain.len();
        let chain = short_chain(&chain);
        return Ok(Err(GroupsError::TooDeep { chain, depth }));
    }
    path.push(group);
    let mut chains: Vec<Vec<String>> = Vec::new();
    let mut failed = None;
    let parents = groups
        .get(group)
        .map(|g| g.parents.as_slice())
        .unwrap_or(&[]);
    for p in parents.iter().filter(|p| !IMPLICIT_GROUPS.contains(p)) {
        match chains_of(p, groups, memo, path)? {
            Ok(above) => {
                for mut c in above {
                    c.push(group.to_owned());
                    if c.len() > MAX_CHAIN_DEPTH {
                        failed = Some(GroupsError::TooDeep {
                            chain: short_chain(&c),
                            depth: c.len(),
                        });
                        break;
                    }
                    chains.push(c);
                }
            }
            Err(e) => failed = Some(e),
        }
        if failed.is_none() && chains.len() > MAX_CHAINS {
            failed = Some(GroupsError::TooManyChains(chains.len()));
        }
        if failed.is_some() {
            break;
        }
    }
    path.pop();
    let result = match failed {
        Some(e) => Err(e),
        None if chains.is_empty() => Ok(vec![vec![group.to_owned()]]),
        None => Ok(chains),
    };
    memo.insert(group, result.clone());
    Ok(result)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `name` can be looked up in DNS (and is nothing else: no spaces, no template).
fn dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// Resolves a DNS name with this machine's resolver: its first IPv4 address, else its first
/// IPv6 one. It blocks (getaddrinfo): async callers run it on their blocking pool.
pub fn resolve_system(name: &str) -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<IpAddr> = (name, 0u16)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "no address".to_owned())
}

/// Whether a variable holds a secret in the clear: a connection or become password or
/// passphrase (`ansible_password`, `ansible_become_pass`, `ansible_winrm_password`,
/// `ansible_doas_pass`…: every `ansible_*` name ending in `_pass`, `_password` or
/// `_passphrase`), or key material (`ansible_ssh_private_key`, not the `…_file` path). A server
/// record, a launch or a playbook's defaults never keep one: secrets are credentials, sealed at
/// rest. An inventory's own `group_vars`/`host_vars` files still reach ansible from the
/// project's tree at run time.
pub fn is_secret_var(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("ansible_")
        && (n.ends_with("_pass")
            || n.ends_with("_password")
            || n.ends_with("_passphrase")
            || n == "ansible_pass"
            || n == "ansible_ssh_private_key")
}

/// The server record a host becomes. `resolve` turns a DNS name into an address (see
/// [`resolve_system`]); it is asked only about hosts without an IP address.
pub fn to_server(
    h: &Host,
    resolve: impl Fn(&str) -> Result<IpAddr, String>,
) -> Result<NewServerRequest, InventoryError> {
    let mut vars = h.vars.clone();
    vars.retain(|k, _| !is_secret_var(k));
    let take = |vars: &mut JsonObject, k: &str| vars.remove(k).map(|v| text(&v));
    let address = take(&mut vars, "ansible_host");
    let named = address.clone().unwrap_or_else(|| h.name.clone());
    let ip_address = if named.parse::<IpAddr>().is_ok() {
        named
    } else {
        if !dns_name(&named) {
            return Err(InventoryError::NotAnAddress {
                host: h.name.clone(),
                address: named,
            });
        }
        let ip = resolve(&named).map_err(|reason| InventoryError::Unresolved {
            host: h.name.clone(),
            name: named.clone(),
            reason,
        })?;
        // The bastion connects by name, through its own DNS; the address is for the record.
        vars.insert("ansible_host".into(), Value::String(named));
        ip.to_string()
    };
    let ssh_port = match take(&mut vars, "ansible_port") {
        Some(p) => Some(p.parse::<i32>().map_err(|_| InventoryError::BadPort {
            host: h.name.clone(),
            port: p.clone(),
        })?),
        None => None,
    };
    let ssh_user = take(&mut vars, "ansible_user");
    let ssh_key_path = take(&mut vars, "ansible_ssh_private_key_file");
    let environment = take(&mut vars, "environment").or_else(|| take(&mut vars, "env"));
    let os_type = take(&mut vars, "os_type").unwrap_or_else(|| "linux".into());
    let mut tags = JsonObject::new();
    for k in TAG_VARS {
        if let Some(v) = vars.remove(*k) {
            tags.insert((*k).to_owned(), Value::String(text(&v)));
        }
    }
    let flat: BTreeSet<&str> = h.groups.iter().flatten().map(String::as_str).collect();
    if !flat.is_empty() {
        let flat: Vec<&str> = flat.into_iter().collect();
        tags.insert("groups".into(), Value::String(flat.join(",")));
    }
    Ok(NewServerRequest {
        hostname: h.name.clone(),
        ip_address,
        os_type,
        os_version: None,
        ssh_port,
        ssh_user,
        ssh_key_path,
        tags: (!tags.is_empty()).then_some(tags),
        environment,
        description: None,
        host_vars: (!vars.is_empty()).then_some(vars),
        inventory_groups: (!h.groups.is_empty()).then(|| h.groups.clone()),
        ssh_credential: None,
        become_credential: None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn secret_variables_are_told_by_name_whatever_the_connection_or_become_method() {
        for secret in [
            "ansible_password",
            "ansible_ssh_pass",
            "ansible_become_password",
            "ansible_BECOME_PASS",
            "ansible_winrm_password",
            "ansible_doas_pass",
            "ansible_ssh_private_key",
            "ansible_vault_password",
        ] {
            assert!(super::is_secret_var(secret), "{secret}");
        }
        for plain in [
            "ansible_ssh_private_key_file",
            "ansible_user",
            "ansible_become_method",
            "db_password",
            "passport",
        ] {
            assert!(!super::is_secret_var(plain), "{plain}");
        }
    }
    use std::process::Command;

    use serde_json::json;

    use super::*;

    /// The inventory of the issue: ranges, groups of groups, group_vars/ and host_vars/
    /// directories (one group's vars a directory itself), a host known by DNS only, hosts in
    /// no group. Ansible reads 9 hosts from it.
    const INI: &str = "\
10.9.0.1
bastion ansible_host=10.9.0.2

[web]
web[01:04]

[db]
db[a:b] ansible_host=10.1.1.1 ansible_user=postgres

[lb]
localhost ansible_connection=local

[fra1:children]
web
db

[prod:children]
fra1
lb

[monitoring]
web01
";

    /// The same inventory in YAML (ranges work there too).
    const YAML: &str = "\
all:
  hosts:
    10.9.0.1:
    bastion:
      ansible_host: 10.9.0.2
  children:
    prod:
      children:
        fra1:
          children:
            web:
              hosts:
                web[01:04]:
            db:
              hosts:
                db[a:b]:
                  ansible_host: 10.1.1.1
                  ansible_user: postgres
        lb:
          hosts:
            localhost:
              ansible_connection: local
    monitoring:
      hosts:
        web01:
";

    fn write(dir: &Path, path: &str, text: &str) {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A directory holding both inventories with their group_vars/ and host_vars/.
    fn inventory_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "hosts.ini", INI);
        write(d, "hosts.yml", YAML);
        write(
            d,
            "group_vars/prod.yml",
            "environment: production\nntp: 10.0.0.1\n",
        );
        write(d, "group_vars/web.yml", "http_port: 8080\nrole: web\n");
        write(d, "group_vars/fra1/main.yml", "dc: fra1\nntp: 10.1.0.1\n");
        write(
            d,
            "host_vars/web01.yml",
            "ansible_host: 10.1.0.11\nansible_port: 2222\n",
        );
        for (h, ip) in [("web02", 12), ("web03", 13), ("web04", 14)] {
            write(
                d,
                &format!("host_vars/{h}.yml"),
                &format!("ansible_host: 10.1.0.{ip}\n"),
            );
        }
        dir
    }

    fn ansible_inventory(dir: &Path, file: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new("ansible-inventory")
            .arg("-i")
            .arg(dir.join(file))
            .args(args)
            .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
            .output()
            .expect("ansible-inventory runs (install ansible-core)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Every host's group chains as `ansible-inventory --graph` draws them: ansible's own
    /// answer, to hold ours against.
    fn graph_chains(graph: &str) -> BTreeMap<String, BTreeSet<Vec<String>>> {
        let mut out: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        let mut stack: Vec<String> = Vec::new();
        for line in graph.lines() {
            let depth = line.matches("|  ").count() + line.matches("   ").count();
            let name = line.trim_start_matches(['|', ' ', '-']);
            stack.truncate(depth);
            if let Some(group) = name.strip_prefix('@') {
                stack.push(group.trim_end_matches(':').to_owned());
            } else {
                let chain: Vec<String> = stack
                    .iter()
                    .filter(|g| !IMPLICIT_GROUPS.contains(&g.as_str()))
                    .cloned()
                    .collect();
                let chains = out.entry(name.to_owned()).or_default();
                if !chain.is_empty() {
                    chains.insert(chain);
                }
            }
        }
        out
    }

    fn dns(name: &str) -> Result<IpAddr, String> {
        resolve_system(name)
    }

    fn chains(c: &[&[&str]]) -> Vec<Vec<String>> {
        c.iter()
            .map(|c| c.iter().map(|g| (*g).to_owned()).collect())
            .collect()
    }

    #[test]
    fn ansible_inventory_listings_become_servers_in_their_groups() {
        let dir = inventory_dir();
        let d = dir.path();
        let hosts = parse_list(&ansible_inventory(d, "hosts.ini", &["--list"])).unwrap();
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "10.9.0.1",
                "bastion",
                "dba",
                "dbb",
                "localhost",
                "web01",
                "web02",
                "web03",
                "web04"
            ],
            "the 9 hosts ansible reads"
        );

        // The chains are the paths ansible draws, host by host.
        let graph = ansible_inventory(d, "hosts.ini", &["--graph"]);
        let drawn = graph_chains(&String::from_utf8_lossy(&graph));
        assert_eq!(drawn.len(), 9, "{drawn:?}");
        for h in &hosts {
            let ours: BTreeSet<Vec<String>> = h.groups.iter().cloned().collect();
            assert_eq!(ours, drawn[&h.name], "{}", h.name);
        }
        let by_name = |n: &str| hosts.iter().find(|h| h.name == n).unwrap();
        assert_eq!(
            by_name("web01").groups,
            chains(&[&["monitoring"], &["prod", "fra1", "web"]])
        );

        let servers: Vec<NewServerRequest> =
            hosts.iter().map(|h| to_server(h, dns).unwrap()).collect();
        let s = |n: &str| servers.iter().find(|s| s.hostname == n).unwrap();
        // host_vars/web01.yml, group_vars/web.yml, group_vars/fra1/main.yml (nearer wins over
        // prod.yml), group_vars/prod.yml.
        let web01 = s("web01");
        assert_eq!(web01.ip_address, "10.1.0.11");
        assert_eq!(web01.ssh_port, Some(2222));
        assert_eq!(web01.environment.as_deref(), Some("production"));
        let tags = web01.tags.as_ref().unwrap();
        assert_eq!(tags["dc"], "fra1");
        assert_eq!(tags["role"], "web");
        assert_eq!(tags["groups"], "fra1,monitoring,prod,web");
        let vars = web01.host_vars.as_ref().unwrap();
        assert_eq!(vars["http_port"], 8080);
        assert_eq!(vars["ntp"], "10.1.0.1");
        assert!(
            !vars.contains_key("ansible_host"),
            "an IP is a column: {vars:?}"
        );
        assert_eq!(s("web04").ip_address, "10.1.0.14");
        assert_eq!(
            (s("dbb").ip_address.as_str(), s("dbb").ssh_user.as_deref()),
            ("10.1.1.1", Some("postgres"))
        );
        assert_eq!(
            s("dbb").inventory_groups,
            Some(chains(&[&["prod", "fra1", "db"]]))
        );
        // Hosts in no group: an IP as the name is the address; no groups at all.
        assert_eq!(s("10.9.0.1").ip_address, "10.9.0.1");
        assert_eq!(s("10.9.0.1").inventory_groups, None);
        assert_eq!(s("bastion").ip_address, "10.9.0.2");
        // Known by DNS only: resolved here for the record, the name kept for the bastion.
        let local = s("localhost");
        assert_eq!(local.ip_address, "127.0.0.1");
        let vars = local.host_vars.as_ref().unwrap();
        assert_eq!(vars["ansible_host"], "localhost");
        assert_eq!(vars["ansible_connection"], "local");
        assert_eq!(local.inventory_groups, Some(chains(&[&["prod", "lb"]])));
        for s in &servers {
            check_groups(s.inventory_groups.as_deref().unwrap_or_default()).unwrap();
        }

        // The YAML inventory, beside the same directories, imports the same servers.
        let yaml = parse_list(&ansible_inventory(d, "hosts.yml", &["--list"])).unwrap();
        let from_yaml: Vec<NewServerRequest> =
            yaml.iter().map(|h| to_server(h, dns).unwrap()).collect();
        assert_eq!(
            serde_json::to_value(&from_yaml).unwrap(),
            serde_json::to_value(&servers).unwrap()
        );
    }

    #[test]
    fn what_cannot_be_a_server_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // ansible accepts (and warns about) a group name it would have to transform.
        write(d, "dash.ini", "[web-servers]\nweb1 ansible_host=10.0.0.1\n");
        let err = parse_list(&ansible_inventory(d, "dash.ini", &["--list"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "web1: group name 'web-servers' is not valid: a group name is 1 to 100 letters, digits and '_', not starting with a digit"
        );
        // A name that does not resolve names the host and says what to do.
        write(d, "dns.ini", "[web]\nweb1.nowhere.invalid\n");
        let hosts = parse_list(&ansible_inventory(d, "dns.ini", &["--list"])).unwrap();
        let err = to_server(&hosts[0], dns).unwrap_err();
        assert!(
            matches!(&err, InventoryError::Unresolved { host, name, .. }
                if host == "web1.nowhere.invalid" && name == "web1.nowhere.invalid"),
            "{err}"
        );
        assert!(
            err.to_string().contains("give the host an ansible_host"),
            "{err}"
        );
        // A template is not a name to look up.
        let h = Host {
            name: "web1".into(),
            groups: vec![],
            vars: json!({"ansible_host": "{{ lookup('pipe', 'id') }}"})
                .as_object()
                .unwrap()
                .clone(),
        };
        let looked_up = std::cell::Cell::new(false);
        let err = to_server(&h, |_| {
            looked_up.set(true);
            Err("no".into())
        })
        .unwrap_err();
        assert!(matches!(err, InventoryError::NotAnAddress { .. }), "{err}");
        assert!(!looked_up.get());
    }

    /// A listing with `parents` → `child` edges and host `h` in `leaf`.
    fn listing(edges: &[(&str, &str)], leaf: &str) -> Value {
        let mut top = serde_json::Map::new();
        for (parent, child) in edges {
            let g = top
                .entry(parent.to_string())
                .or_insert_with(|| json!({"children": []}));
            g["children"].as_array_mut().unwrap().push(json!(child));
        }
        top.entry(leaf.to_owned()).or_insert_with(|| json!({}))["hosts"] = json!(["h"]);
        top.insert("_meta".into(), json!({"hostvars": {"h": {"x": 1}}}));
        Value::Object(top)
    }

    #[test]
    fn group_graphs_are_bounded() {
        // A cycle is refused for the whole inventory.
        let err = hosts_from_list(&listing(&[("a", "b"), ("b", "a")], "b")).unwrap_err();
        assert!(matches!(err, InventoryError::Cycle { .. }), "{err}");
        // 16 deep is fine, 17 is not; the host is named.
        let names: Vec<String> = (0..17).map(|i| format!("g{i}")).collect();
        let edges: Vec<(&str, &str)> = names
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        let ok = hosts_from_list(&listing(&edges[1..], "g16")).unwrap();
        assert_eq!(ok[0].groups[0].len(), 16);
        let err = hosts_from_list(&listing(&edges, "g16")).unwrap_err();
        assert!(
            matches!(&err, InventoryError::Groups { host, source: GroupsError::TooDeep { depth: 17, .. } } if host == "h"),
            "{err}"
        );
        // Diamonds multiply chains: 2^7 = 128 ways down is more than a server keeps.
        let mut edges = Vec::new();
        let layers: Vec<[String; 2]> = (0..7).map(|i| [format!("a{i}"), format!("b{i}")]).collect();
        for w in layers.windows(2) {
            for p in &w[0] {
                for c in &w[1] {
                    edges.push((p.clone(), c.clone()));
                }
            }
        }
        for p in &layers[6] {
            edges.push((p.clone(), "leaf".into()));
        }
        let edges: Vec<(&str, &str)> = edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let err = hosts_from_list(&listing(&edges, "leaf")).unwrap_err();
        assert!(
            matches!(
                &err,
                InventoryError::Groups {
                    source: GroupsError::TooManyChains(_),
                    ..
                }
            ),
            "{err}"
        );
        // Too large is refused before it is parsed; not a listing is named.
        let big = vec![b' '; MAX_LIST_BYTES + 1];
        assert!(matches!(
            parse_list(&big),
            Err(InventoryError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_list(b"[1]"),
            Err(InventoryError::NotAList(_))
        ));
        assert!(matches!(
            parse_list(b"{\"_meta\": {}}"),
            Err(InventoryError::Empty)
        ));
    }

    #[test]
    fn group_chains_follow_the_rules() {
        assert!(valid_group_name("_x"));
        assert!(valid_group_name(&"a".repeat(100)));
        for bad in ["", "1web", "web-servers", "wéb", "a b", &"a".repeat(101)] {
            assert!(!valid_group_name(bad), "{bad}");
        }
        check_groups(&chains(&[&["prod", "web"], &["dc_fra1"]])).unwrap();
        assert_eq!(
            check_groups(&chains(&[&["prod", "web-1"]])),
            Err(GroupsError::BadName("web-1".into()))
        );
        assert_eq!(
            check_groups(&chains(&[&["all", "web"]])),
            Err(GroupsError::Implicit("all".into()))
        );
        assert_eq!(check_groups(&[vec![]]), Err(GroupsError::EmptyChain));
        let many = vec![vec!["g".to_owned()]; 65];
        assert_eq!(check_groups(&many), Err(GroupsError::TooManyChains(65)));
        let deep = vec![vec!["g".to_owned(); 17]];
        assert!(matches!(
            check_groups(&deep),
            Err(GroupsError::TooDeep { depth: 17, .. })
        ));
    }
}
