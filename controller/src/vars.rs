//! The rules a launch's variables meet before any job is made of them: names ansible accepts,
//! `ansible_*` for admins only, bounded size and depth, and a bound on what one launch copies
//! into the database (the values are stored once per target server).
//!
//! Whether ansible may evaluate templates in them is decided here too: never for operators and
//! viewers, and for admins only where the controller's `admin_launch_vars_templates` is on.
//! Everything else reaches ansible as data (the agent marks it `!unsafe`).

use serde_json::{Map, Value};
use thiserror::Error;

/// The encoded (JSON) size of one launch's variables at most.
pub const MAX_BYTES: usize = 64 * 1024;
/// Their size times the number of target servers at most: what one launch may add to `jobs`.
pub const MAX_LAUNCH_BYTES: usize = 16 * 1024 * 1024;
/// Levels of nested lists and objects at most (the YAML form's limit too).
pub const MAX_DEPTH: usize = 32;
/// A variable name's length at most.
const MAX_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VarsError {
    #[error("extra vars are {size} bytes as JSON; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("extra vars are {size} bytes for each of {servers} servers ({total} bytes in all); one launch takes at most {max}: launch on fewer servers at a time or pass less")]
    LaunchTooLarge {
        size: usize,
        servers: usize,
        total: usize,
        max: usize,
    },
    #[error("extra var '{name}': nested more than {max} levels deep")]
    TooDeep { name: String, max: usize },
    #[error("extra var '{name}': a variable name is a letter or _ followed by letters, digits or _ (at most {max} characters)")]
    BadName { name: String, max: usize },
    #[error("extra var '{name}': variables named ansible_* change how ansible reaches hosts and are for admins only")]
    AdminOnly { name: String },
    #[error("extra var '{name}' would keep a secret in the clear (stored with the job, shown with it): store it as a credential and name it at launch (`credentials`)")]
    Secret { name: String },
}

/// Who gives the variables, as far as these rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Giver {
    pub is_admin: bool,
    /// The setting `admin_launch_vars_templates`.
    pub admin_templates_allowed: bool,
}

/// What [`check`] found: enough to bound the launch's copies once its servers are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The values' size as JSON.
    pub size: usize,
    /// Whether ansible may evaluate templates in them.
    pub templated: bool,
}

/// Checks `vars` as one launch's values: names, depth and size, before anything is looked up.
pub fn check(vars: &Map<String, Value>, giver: Giver) -> Result<Checked, VarsError> {
    for name in vars.keys() {
        if !valid_name(name) {
            return Err(VarsError::BadName {
                name: printable(name),
                max: MAX_NAME,
            });
        }
        if name.starts_with("ansible_") && !giver.is_admin {
            return Err(VarsError::AdminOnly { name: name.clone() });
        }
        if outpost_api::inventory::is_secret_var(name) {
            return Err(VarsError::Secret { name: name.clone() });
        }
    }
    for (name, value) in vars {
        if depth(value) > MAX_DEPTH {
            return Err(VarsError::TooDeep {
                name: name.clone(),
                max: MAX_DEPTH,
            });
        }
    }
    let size = serde_json::to_vec(vars)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_BYTES {
        return Err(VarsError::TooLarge {
            size,
            max: MAX_BYTES,
        });
    }
    Ok(Checked {
        size,
        templated: giver.is_admin && giver.admin_templates_allowed && !vars.is_empty(),
    })
}

/// Checks what a launch of checked values on `servers` targets copies into the jobs.
pub fn check_copies(checked: Checked, servers: usize) -> Result<(), VarsError> {
    let total = checked.size.saturating_mul(servers);
    if total > MAX_LAUNCH_BYTES {
        return Err(VarsError::LaunchTooLarge {
            size: checked.size,
            servers,
            total,
            max: MAX_LAUNCH_BYTES,
        });
    }
    Ok(())
}

/// A name ansible takes as a variable: an identifier.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Levels of nesting, counted without recursion (a value may come from anywhere).
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// A name as an error message may quote it: short, control characters escaped.
fn printable(name: &str) -> String {
    crate::text::fit_chars(name, 64).escape_debug().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OPERATOR: Giver = Giver {
        is_admin: false,
        admin_templates_allowed: true,
    };
    const ADMIN: Giver = Giver {
        is_admin: true,
        admin_templates_allowed: false,
    };

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn launch_values_are_data_unless_an_admin_may_template() {
        let vars = obj(json!({"greeting": "{{ lookup('pipe', 'id') }}"}));
        assert_eq!(check(&vars, OPERATOR).map(|c| c.templated), Ok(false));
        assert_eq!(check(&vars, ADMIN).map(|c| c.templated), Ok(false));
        let allowed = Giver {
            is_admin: true,
            admin_templates_allowed: true,
        };
        assert_eq!(check(&vars, allowed).map(|c| c.templated), Ok(true));
    }

    #[test]
    fn names_are_identifiers_and_ansible_ones_are_for_admins() {
        for bad in ["", "1x", "a-b", "a b", "{{ x }}", "é"] {
            let vars = obj(json!({ bad: 1 }));
            assert!(
                matches!(check(&vars, ADMIN), Err(VarsError::BadName { .. })),
                "{bad}"
            );
        }
        let vars = obj(json!({"ansible_connection": "local"}));
        assert!(matches!(
            check(&vars, OPERATOR),
            Err(VarsError::AdminOnly { .. })
        ));
        assert_eq!(check(&vars, ADMIN).map(|c| c.templated), Ok(false));
    }

    #[test]
    fn size_depth_and_copies_are_bounded() {
        let big = obj(json!({"x": "y".repeat(MAX_BYTES)}));
        assert!(matches!(
            check(&big, ADMIN),
            Err(VarsError::TooLarge { .. })
        ));
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!([deep]);
        }
        assert!(matches!(
            check(&obj(json!({ "d": deep })), ADMIN),
            Err(VarsError::TooDeep { .. })
        ));
        let medium = obj(json!({"x": "y".repeat(40 * 1024)}));
        let checked = check(&medium, ADMIN).unwrap();
        assert_eq!(check_copies(checked, 400), Ok(()));
        assert!(matches!(
            check_copies(checked, 500),
            Err(VarsError::LaunchTooLarge { servers: 500, .. })
        ));
    }
}
