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

/// One group of the listing: the hosts it lists itself and its child groups.
#[derive(Default)]
struct Group<'a> {
    hosts: Vec<&'a str>,
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
        groups.entry(name).or_default().hosts = listed;
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
            let (found, _) = chains_of(g, &groups, &mut memo, &mut Vec::new())?;
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
/// whole inventory; a group too deep, too branched or badly named fails only its hosts.
/// `path` holds the groups below `group` on the way here: when it is already as deep as a chain
/// may be, the walk stops, and that answer (which depends on the way here, not only on
/// `group`) is marked so that it is not remembered for `group`.
fn chains_of<'a>(
    group: &'a str,
    groups: &BTreeMap<&'a str, Group<'a>>,
    memo: &mut BTreeMap<&'a str, Chains>,
    path: &mut Vec<&'a str>,
) -> Result<(Chains, bool), InventoryError> {
    if let Some(known) = memo.get(group) {
        return Ok((known.clone(), false));
    }
    if path.contains(&group) {
        return Err(InventoryError::Cycle {
            group: group.to_owned(),
        });
    }
    if !valid_group_name(group) {
        let e = Err(GroupsError::BadName(group.to_owned()));
        memo.insert(group, e.clone());
        return Ok((e, false));
    }
    if path.len() >= MAX_CHAIN_DEPTH {
        let mut chain: Vec<String> = vec![group.to_owned()];
        chain.extend(path.iter().rev().map(|g| (*g).to_owned()));
        let depth = chain.len();
        let chain = short_chain(&chain);
        return Ok((Err(GroupsError::TooDeep { chain, depth }), true));
    }
    path.push(group);
    let mut chains: Vec<Vec<String>> = Vec::new();
    let mut failed = None;
    let mut cut = false;
    let parents = groups
        .get(group)
        .map(|g| g.parents.as_slice())
        .unwrap_or(&[]);
    for p in parents.iter().filter(|p| !IMPLICIT_GROUPS.contains(p)) {
        let (above, tainted) = chains_of(p, groups, memo, path)?;
        cut |= tainted;
        match above {
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
    if !cut {
        memo.insert(group, result.clone());
    }
    Ok((result, cut))
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
/// IPv6 one.
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

/// The server record a host becomes. `resolve` turns a DNS name into an address (see
/// [`resolve_system`]); it is asked only about hosts without an IP address.
pub fn to_server(
    h: &Host,
    resolve: impl Fn(&str) -> Result<IpAddr, String>,
) -> Result<NewServerRequest, InventoryError> {
    let mut vars = h.vars.clone();
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
    })
}
