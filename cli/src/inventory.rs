//! Outpost's own reader of INI and YAML inventories, used when `ansible-inventory` is not
//! installed: it produces what `ansible-inventory --list` would for the simple cases (hosts,
//! groups of groups, inline vars; no ranges, no `group_vars/`/`host_vars/` directories, no
//! plugins), and [`outpost_api::inventory`] turns that into server records exactly as it does
//! ansible's own listing. Group vars are inherited by the group's hosts and children, host vars
//! win.

use std::collections::BTreeMap;

use outpost_api::inventory::Host;
use outpost_api::yaml::YamlError;
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
    #[error(transparent)]
    Hosts(#[from] outpost_api::inventory::InventoryError),
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

    /// Every host with its group chains and merged vars, read from the listing
    /// `ansible-inventory --list` would print for these groups.
    fn resolve(self) -> Result<Vec<Host>, InventoryError> {
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
        let mut hostvars = serde_json::Map::new();
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
            groups.sort_by_key(|g| (g != "all", depth(g)));
            let mut vars = serde_json::Map::new();
            for g in &groups {
                if let Some(v) = self.vars.get(g) {
                    vars.extend(v.clone());
                }
            }
            vars.extend(self.host_vars.get(host).cloned().unwrap_or_default());
            hostvars.insert(host.clone(), Value::Object(vars));
        }
        let mut list = serde_json::Map::new();
        let names: std::collections::BTreeSet<&String> =
            self.hosts.keys().chain(self.children.keys()).collect();
        for g in names {
            list.insert(
                g.clone(),
                serde_json::json!({
                    "hosts": self.hosts.get(g).cloned().unwrap_or_default(),
                    "children": self.children.get(g).cloned().unwrap_or_default(),
                }),
            );
        }
        list.insert("_meta".into(), serde_json::json!({ "hostvars": hostvars }));
        Ok(outpost_api::inventory::hosts_from_list(&Value::Object(
            list,
        ))?)
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
    g.resolve()
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
    g.resolve()
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

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::inventory::{to_server, InventoryError as HostError};

    /// No DNS in these tests: every name is unknown.
    fn no_dns(_: &str) -> Result<std::net::IpAddr, String> {
        Err("not looked up in this test".into())
    }

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
        let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["db1.fra1", "web1.fra1", "web2.fra1"]);
        let web1 = to_server(&hosts[1], no_dns).unwrap();
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
        assert_eq!(
            web1.inventory_groups,
            Some(vec![vec!["fra1".to_owned(), "web".to_owned()]])
        );
        assert_eq!(web1.host_vars.unwrap()["ntp"], "10.1.0.1");
        let web2 = to_server(&hosts[2], no_dns).unwrap();
        assert_eq!(web2.host_vars.unwrap()["http_port"], "8080 alt");
        let db1 = to_server(&hosts[0], no_dns).unwrap();
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
        let s = to_server(&hosts[0], no_dns).unwrap();
        assert_eq!(s.ip_address, "10.2.0.5");
        assert_eq!(s.environment.as_deref(), Some("staging"));
        assert_eq!(s.tags.as_ref().unwrap()["dc"], "nyc1");
        assert_eq!(s.tags.unwrap()["groups"], "nyc1");
        assert_eq!(s.inventory_groups, Some(vec![vec!["nyc1".to_owned()]]));
        assert_eq!(s.host_vars.unwrap()["app_version"], "2.1");
    }

    #[test]
    fn what_cannot_be_a_server_is_named() {
        let hosts = parse_ini("[web]\nweb1 ansible_host=web1.example.com\n").unwrap();
        let err = to_server(&hosts[0], no_dns).unwrap_err();
        assert!(
            matches!(&err, HostError::Unresolved { host, name, .. }
                if host == "web1" && name == "web1.example.com"),
            "{err}"
        );
        assert!(err.to_string().contains("ansible_host"), "{err}");
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
            to_server(&hosts[0], no_dns),
            Err(HostError::BadPort { port, .. }) if port == "ssh"
        ));
        // A group name ansible would have to transform is refused, naming it.
        let err = parse_ini("[web-servers]\nweb1 ansible_host=10.0.0.1\n").unwrap_err();
        assert!(err.to_string().contains("'web-servers'"), "{err}");
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
