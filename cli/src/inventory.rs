//! Reading the Ansible inventories ops teams already have (INI or YAML) into server records:
//! `ansible_host`, `ansible_port`, `ansible_user` and `ansible_ssh_private_key_file` become the
//! server's columns; `environment`/`env` its environment; group names and datacenter-style vars
//! (`dc`, `datacenter`, `region`, `zone`, `site`, `role`) its tags; everything else its host
//! vars. Group vars are inherited by the group's hosts and children, host vars win.

use std::collections::BTreeMap;

use outpost_api::yaml::YamlError;
use outpost_api::{JsonObject, NewServerRequest};
use serde_json::Value;
use thiserror::Error;

/// Why an inventory, or a host in it, cannot be read into server records.
#[derive(Debug, Error)]
pub enum InventoryError {
    #[error("line {line}: unknown section [{head}]")]
    UnknownSection { line: usize, head: String },
    #[error("line {line}: expected key=value in [{group}:vars]")]
    NotAGroupVar { line: usize, group: String },
    #[error("line {line}: host ranges such as {host} are not supported; list the hosts")]
    HostRange { line: usize, host: String },
    #[error("line {line}: '{word}' is not key=value")]
    NotAHostVar { line: usize, word: String },
    #[error(transparent)]
    Yaml(#[from] YamlError),
    #[error("the inventory is empty")]
    Empty,
    #[error("a YAML inventory is a mapping of groups (all: …)")]
    NotGroups,
    #[error("{host}: ansible_host '{address}' is not an IP address, which a server record needs")]
    NotAnIp { host: String, address: String },
    #[error("{host}: ansible_port '{port}' is not a number")]
    BadPort { host: String, port: String },
}

/// Vars that become tags.
const TAG_VARS: &[&str] = &["dc", "datacenter", "region", "zone", "site", "role"];

/// One host as the inventory describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Host {
    pub name: String,
    pub groups: Vec<String>,
    pub vars: BTreeMap<String, Value>,
}

fn scalar(s: &str) -> Value {
    let s = s.trim();
    let unquoted = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')));
    if let Some(u) = unquoted {
        return Value::String(u.to_owned());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Value::from(n);
    }
    match s {
        "true" | "True" | "yes" => Value::Bool(true),
        "false" | "False" | "no" => Value::Bool(false),
        _ => Value::String(s.to_owned()),
    }
}

/// Splits `k=v k2="v 2"` on whitespace outside quotes.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (_, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[derive(Default)]
struct Groups {
    hosts: BTreeMap<String, Vec<String>>,
    vars: BTreeMap<String, BTreeMap<String, Value>>,
    children: BTreeMap<String, Vec<String>>,
    host_vars: BTreeMap<String, BTreeMap<String, Value>>,
    order: Vec<String>,
}

impl Groups {
    fn add_host(&mut self, group: &str, host: &str, vars: BTreeMap<String, Value>) {
        if !self.host_vars.contains_key(host) {
            self.order.push(host.to_owned());
        }
        self.hosts
            .entry(group.to_owned())
            .or_default()
            .push(host.to_owned());
        self.host_vars
            .entry(host.to_owned())
            .or_default()
            .extend(vars);
    }

    /// Every host with its groups (ancestors included) and merged vars.
    fn resolve(self) -> Vec<Host> {
        let mut parents: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, kids) in &self.children {
            for k in kids {
                parents.entry(k.clone()).or_default().push(g.clone());
            }
        }
        let ancestors = |g: &str| {
            let mut seen = vec![];
            let mut stack = vec![g.to_owned()];
            while let Some(x) = stack.pop() {
                if seen.contains(&x) {
                    continue;
                }
                seen.push(x.clone());
                if let Some(ps) = parents.get(&x) {
                    stack.extend(ps.iter().cloned());
                }
            }
            seen
        };
        let mut out = Vec::new();
        for host in &self.order {
            let mut groups: Vec<String> = Vec::new();
            for (g, members) in &self.hosts {
                if members.contains(host) {
                    for a in ancestors(g) {
                        if !groups.contains(&a) {
                            groups.push(a);
                        }
                    }
                }
            }
            // Vars: `all` first, then outer groups before inner ones, then the host's own.
            let depth = |g: &String| ancestors(g).len();
            let mut ordered = groups.clone();
            ordered.sort_by_key(|g| (g != "all", depth(g)));
            let mut vars = BTreeMap::new();
            for g in &ordered {
                if let Some(v) = self.vars.get(g) {
                    vars.extend(v.clone());
                }
            }
            vars.extend(self.host_vars.get(host).cloned().unwrap_or_default());
            groups.retain(|g| g != "all" && g != "ungrouped");
            groups.sort();
            out.push(Host {
                name: host.clone(),
                groups,
                vars,
            });
        }
        out
    }
}

/// Parses an INI inventory.
pub fn parse_ini(text: &str) -> Result<Vec<Host>, InventoryError> {
    let mut g = Groups::default();
    let mut section = ("ungrouped".to_owned(), "hosts".to_owned());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = match head.split_once(':') {
                Some((name, kind)) if kind == "vars" || kind == "children" => {
                    (name.to_owned(), kind.to_owned())
                }
                Some(_) => {
                    return Err(InventoryError::UnknownSection {
                        line: n + 1,
                        head: head.to_owned(),
                    })
                }
                None => (head.to_owned(), "hosts".to_owned()),
            };
            continue;
        }
        match section.1.as_str() {
            "vars" => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| InventoryError::NotAGroupVar {
                        line: n + 1,
                        group: section.0.clone(),
                    })?;
                g.vars
                    .entry(section.0.clone())
                    .or_default()
                    .insert(k.trim().to_owned(), scalar(v));
            }
            "children" => g
                .children
                .entry(section.0.clone())
                .or_default()
                .push(line.to_owned()),
            _ => {
                let mut parts = words(line).into_iter();
                let host = parts.next().unwrap_or_default();
                if host.contains('[') {
                    return Err(InventoryError::HostRange { line: n + 1, host });
                }
                let mut vars = BTreeMap::new();
                for p in parts {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| InventoryError::NotAHostVar {
                            line: n + 1,
                            word: p.clone(),
                        })?;
                    vars.insert(k.to_owned(), scalar(v));
                }
                g.add_host(&section.0, &host, vars);
            }
        }
    }
    Ok(g.resolve())
}

/// A YAML document as JSON (for `-e @vars.yml`), read within the same bounds as the
/// controller's launch form.
pub fn yaml_document(text: &str) -> Result<Value, YamlError> {
    outpost_api::yaml::parse_one(text, outpost_api::yaml::Limits::VARS)
}

fn yaml_vars(y: &Value) -> BTreeMap<String, Value> {
    match y {
        Value::Object(m) => m.clone().into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// Parses a YAML inventory (`all: {hosts, vars, children}`), read within bounds: aliases count
/// as what they expand to, nesting and size are capped.
pub fn parse_yaml(text: &str) -> Result<Vec<Host>, InventoryError> {
    let doc = outpost_api::yaml::parse_one(text, outpost_api::yaml::Limits::FILE)?;
    if doc.is_null() {
        return Err(InventoryError::Empty);
    }
    let top = doc.as_object().ok_or(InventoryError::NotGroups)?;
    let mut g = Groups::default();
    fn walk(g: &mut Groups, name: &str, body: &Value) {
        if let Some(hosts) = body.get("hosts").and_then(Value::as_object) {
            for (h, vars) in hosts {
                g.add_host(name, h, yaml_vars(vars));
            }
        }
        if let Some(vars) = body.get("vars").filter(|v| v.is_object()) {
            g.vars
                .entry(name.to_owned())
                .or_default()
                .extend(yaml_vars(vars));
        }
        if let Some(children) = body.get("children").and_then(Value::as_object) {
            for (c, cbody) in children {
                g.children
                    .entry(name.to_owned())
                    .or_default()
                    .push(c.to_owned());
                walk(g, c, cbody);
            }
        }
    }
    for (name, body) in top {
        walk(&mut g, name, body);
    }
    Ok(g.resolve())
}

/// Parses either format: YAML when the file looks like it, INI otherwise.
pub fn parse(path: &str, text: &str) -> Result<Vec<Host>, InventoryError> {
    let yamlish =
        path.ends_with(".yml") || path.ends_with(".yaml") || text.trim_start().starts_with("all:");
    if yamlish {
        parse_yaml(text)
    } else {
        parse_ini(text)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The server record a host becomes.
pub fn to_server(h: &Host) -> Result<NewServerRequest, InventoryError> {
    let mut vars = h.vars.clone();
    let take = |vars: &mut BTreeMap<String, Value>, k: &str| vars.remove(k).map(|v| text(&v));
    let address = take(&mut vars, "ansible_host").unwrap_or_else(|| h.name.clone());
    if address.parse::<std::net::IpAddr>().is_err() {
        return Err(InventoryError::NotAnIp {
            host: h.name.clone(),
            address,
        });
    }
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
    if !h.groups.is_empty() {
        tags.insert("groups".into(), Value::String(h.groups.join(",")));
    }
    let host_vars: JsonObject = vars.into_iter().collect();
    Ok(NewServerRequest {
        hostname: h.name.clone(),
        ip_address: address,
        os_type,
        os_version: None,
        ssh_port,
        ssh_user,
        ssh_key_path,
        tags: (!tags.is_empty()).then_some(tags),
        environment,
        description: None,
        host_vars: (!host_vars.is_empty()).then_some(host_vars),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = r#"
# fra1
[web]
web1.fra1 ansible_host=10.1.0.11 ansible_port=2222 ansible_user=deploy
web2.fra1 ansible_host=10.1.0.12 http_port="8080 alt"

[db]
db1.fra1 ansible_host=10.1.0.21 ansible_ssh_private_key_file=/home/ops/.ssh/db

[fra1:children]
web
db

[fra1:vars]
dc=fra1
environment=production
ntp=10.1.0.1

[web:vars]
role=web
"#;

    #[test]
    fn ini_hosts_groups_and_inherited_vars() {
        let hosts = parse_ini(INI).unwrap();
        assert_eq!(hosts.len(), 3);
        let web1 = to_server(&hosts[0]).unwrap();
        assert_eq!(web1.hostname, "web1.fra1");
        assert_eq!(web1.ip_address, "10.1.0.11");
        assert_eq!(
            (web1.ssh_port, web1.ssh_user.as_deref()),
            (Some(2222), Some("deploy"))
        );
        assert_eq!(web1.environment.as_deref(), Some("production"));
        let tags = web1.tags.unwrap();
        assert_eq!(tags["dc"], "fra1");
        assert_eq!(tags["role"], "web");
        assert_eq!(tags["groups"], "fra1,web");
        assert_eq!(web1.host_vars.unwrap()["ntp"], "10.1.0.1");
        let web2 = to_server(&hosts[1]).unwrap();
        assert_eq!(web2.host_vars.unwrap()["http_port"], "8080 alt");
        let db1 = to_server(&hosts[2]).unwrap();
        assert_eq!(db1.ssh_key_path.as_deref(), Some("/home/ops/.ssh/db"));
        assert!(!db1.tags.unwrap().contains_key("role"));
    }

    #[test]
    fn yaml_inventories_read_the_same() {
        let yaml = r#"
all:
  vars:
    environment: staging
  children:
    nyc1:
      vars:
        dc: nyc1
      hosts:
        app1.nyc1:
          ansible_host: 10.2.0.5
          ansible_port: 22
          app_version: "2.1"
"#;
        let hosts = parse_yaml(yaml).unwrap();
        assert_eq!(hosts.len(), 1);
        let s = to_server(&hosts[0]).unwrap();
        assert_eq!(s.ip_address, "10.2.0.5");
        assert_eq!(s.environment.as_deref(), Some("staging"));
        assert_eq!(s.tags.as_ref().unwrap()["dc"], "nyc1");
        assert_eq!(s.tags.unwrap()["groups"], "nyc1");
        assert_eq!(s.host_vars.unwrap()["app_version"], "2.1");
    }

    #[test]
    fn what_cannot_be_a_server_is_named() {
        let hosts = parse_ini("[web]\nweb1 ansible_host=web1.example.com\n").unwrap();
        let err = to_server(&hosts[0]).unwrap_err();
        assert!(
            matches!(&err, InventoryError::NotAnIp { host, address }
                if host == "web1" && address == "web1.example.com"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "web1: ansible_host 'web1.example.com' is not an IP address, which a server record needs"
        );
        let err = parse_ini("[web]\nweb[01:10]\n").unwrap_err();
        assert!(
            matches!(&err, InventoryError::HostRange { line: 2, host } if host == "web[01:10]"),
            "{err}"
        );
        assert!(err.to_string().contains("ranges"), "{err}");
        assert!(matches!(
            parse_ini("[web:nope]\n"),
            Err(InventoryError::UnknownSection { line: 1, .. })
        ));
        let hosts = parse_ini("web1 ansible_host=10.0.0.1 ansible_port=ssh\n").unwrap();
        assert!(matches!(
            to_server(&hosts[0]),
            Err(InventoryError::BadPort { port, .. }) if port == "ssh"
        ));
        assert!(matches!(
            parse_yaml("# nothing\n"),
            Err(InventoryError::Empty)
        ));
        assert!(matches!(
            parse_yaml("- a\n- b\n"),
            Err(InventoryError::NotGroups)
        ));
        assert!(matches!(
            parse_yaml("all: [\n"),
            Err(InventoryError::Yaml(YamlError::Syntax(_)))
        ));
    }
}
