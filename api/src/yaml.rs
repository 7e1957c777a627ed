//! YAML from a caller, read with bounds checked *before* anything is built: its size, its
//! nesting depth and the number of nodes it expands to, aliases included.
//!
//! An ordinary loader expands aliases without limit: nine nested levels of `&a [*b, *b, …]`, a
//! few hundred bytes, become billions of nodes. Here every alias is charged the size and depth
//! of what it names before it is copied, so such a document is refused after a few thousand
//! nodes. Parsing pulls events one at a time and keeps its own stack, so `- - - - …` nested a
//! million levels deep is refused at the depth limit instead of overflowing a stack.
//!
//! Documents come out as JSON values: plain scalars are resolved as YAML 1.2's core schema
//! does (`true`, `42`, `1.5`, `~`), quoted ones stay strings, local tags such as `!unsafe` or
//! `!vault` are kept as their text. Mapping keys must be scalars and appear once.

use serde_json::{Map, Number, Value};
use thiserror::Error;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// How much of a document is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of text, checked before parsing.
    pub max_bytes: usize,
    /// Levels of nested sequences and mappings.
    pub max_depth: usize,
    /// Scalars, sequences and mappings in all documents, each alias counted as what it expands to.
    pub max_nodes: usize,
    /// Documents in the stream.
    pub max_documents: usize,
}

impl Limits {
    /// Variables typed into a launch form or given with `-e @file`.
    pub const VARS: Limits = Limits {
        max_bytes: 256 * 1024,
        max_depth: 32,
        max_nodes: 20_000,
        max_documents: 1,
    };
    /// A playbook or an inventory file.
    pub const FILE: Limits = Limits {
        max_bytes: 5 * 1024 * 1024,
        max_depth: 64,
        max_nodes: 500_000,
        max_documents: 16,
    };
}

/// Why a document was refused; the message says where.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum YamlError {
    #[error("the YAML is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("not valid YAML: {0}")]
    Syntax(String),
    #[error("line {line}: nested more than {max} levels deep")]
    TooDeep { line: usize, max: usize },
    #[error("line {line}: the YAML expands to more than {max} values (aliases count as what they repeat)")]
    TooManyNodes { line: usize, max: usize },
    #[error("more than {max} YAML documents")]
    TooManyDocuments { max: usize },
    #[error("line {line}: alias *{anchor} names no anchor before it")]
    UnknownAlias { line: usize, anchor: usize },
    #[error("line {line}: a mapping key must be a plain value, not a list or mapping")]
    ComplexKey { line: usize },
    #[error("line {line}: the key '{key}' appears twice in one mapping")]
    DuplicateKey { line: usize, key: String },
    #[error("line {line}: '{text}' is not a number JSON can hold")]
    BadNumber { line: usize, text: String },
}

/// Every document of `text`, within `limits`.
pub fn parse(text: &str, limits: Limits) -> Result<Vec<Value>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::TooLarge {
            size: text.len(),
            max: limits.max_bytes,
        });
    }
    Reader::new(limits).read(text)
}

/// Exactly one document (an empty text is `Null`).
pub fn parse_one(text: &str, limits: Limits) -> Result<Value, YamlError> {
    let mut docs = parse(text, limits)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.remove(0)),
        _ => Err(YamlError::TooManyDocuments { max: 1 }),
    }
}

/// A collection being filled, with what it needs to be finished.
enum Open {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        first_node: usize,
        depth: usize,
    },
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        first_node: usize,
        depth: usize,
    },
}

/// What an anchor named: its value, how many nodes it holds and how deep it goes.
struct Anchored {
    value: Value,
    nodes: usize,
    height: usize,
}

struct Reader {
    limits: Limits,
    stack: Vec<Open>,
    anchors: std::collections::HashMap<usize, Anchored>,
    nodes: usize,
    docs: Vec<Value>,
    /// The deepest level reached below each open collection, for anchors' heights.
    deepest: usize,
}

impl Reader {
    fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            stack: Vec::new(),
            anchors: Default::default(),
            nodes: 0,
            docs: Vec::new(),
            deepest: 0,
        }
    }

    fn read(mut self, text: &str) -> Result<Vec<Value>, YamlError> {
        let mut parser = Parser::new_from_str(text);
        loop {
            let (event, mark) = parser
                .next_token()
                .map_err(|e| YamlError::Syntax(e.to_string()))?;
            match event {
                Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentEnd => {}
                Event::DocumentStart => {
                    if self.docs.len() >= self.limits.max_documents {
                        return Err(YamlError::TooManyDocuments {
                            max: self.limits.max_documents,
                        });
                    }
                }
                Event::Alias(id) => {
                    let line = mark.line();
                    let a = self
                        .anchors
                        .get(&id)
                        .ok_or(YamlError::UnknownAlias { line, anchor: id })?;
                    let (nodes, height) = (a.nodes, a.height);
                    self.charge(nodes, &mark)?;
                    self.reach(self.stack.len() + height, &mark)?;
                    let value = self.anchors[&id].value.clone();
                    self.put(value, &mark)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.charge(1, &mark)?;
                    self.reach(self.stack.len(), &mark)?;
                    let forced_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                    let value = if style == TScalarStyle::Plain && !forced_string {
                        resolve(&text, &mark)?
                    } else {
                        Value::String(text)
                    };
                    if anchor > 0 {
                        self.anchors.insert(
                            anchor,
                            Anchored {
                                value: value.clone(),
                                nodes: 1,
                                height: 0,
                            },
                        );
                    }
                    self.put(value, &mark)?;
                }
                Event::SequenceStart(anchor, _) => {
                    self.charge(1, &mark)?;
                    let depth = self.stack.len() + 1;
                    self.reach(depth, &mark)?;
                    self.stack.push(Open::Seq {
                        items: Vec::new(),
                        anchor,
                        first_node: self.nodes,
                        depth,
                    });
                }
                Event::MappingStart(anchor, _) => {
                    self.charge(1, &mark)?;
                    let depth = self.stack.len() + 1;
                    self.reach(depth, &mark)?;
                    self.stack.push(Open::Map {
                        map: Map::new(),
                        key: None,
                        anchor,
                        first_node: self.nodes,
                        depth,
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (value, anchor, first_node, depth) = match self.stack.pop() {
                        Some(Open::Seq {
                            items,
                            anchor,
                            first_node,
                            depth,
                        }) => (Value::Array(items), anchor, first_node, depth),
                        Some(Open::Map {
                            map,
                            anchor,
                            first_node,
                            depth,
                            ..
                        }) => (Value::Object(map), anchor, first_node, depth),
                        None => return Err(YamlError::Syntax("unbalanced collection".into())),
                    };
                    if anchor > 0 {
                        self.anchors.insert(
                            anchor,
                            Anchored {
                                value: value.clone(),
                                // The collection itself was charged before `first_node`.
                                nodes: self.nodes - first_node + 1,
                                height: self.deepest.saturating_sub(depth) + 1,
                            },
                        );
                    }
                    if self.stack.is_empty() {
                        self.deepest = 0;
                    }
                    self.put(value, &mark)?;
                }
            }
        }
        Ok(self.docs)
    }

    fn charge(&mut self, nodes: usize, mark: &Marker) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.limits.max_nodes {
            return Err(YamlError::TooManyNodes {
                line: mark.line(),
                max: self.limits.max_nodes,
            });
        }
        Ok(())
    }

    fn reach(&mut self, depth: usize, mark: &Marker) -> Result<(), YamlError> {
        if depth > self.limits.max_depth {
            return Err(YamlError::TooDeep {
                line: mark.line(),
                max: self.limits.max_depth,
            });
        }
        self.deepest = self.deepest.max(depth);
        Ok(())
    }

    /// Places a finished value into the open collection, or ends a document with it.
    fn put(&mut self, value: Value, mark: &Marker) -> Result<(), YamlError> {
        match self.stack.last_mut() {
            None => self.docs.push(value),
            Some(Open::Seq { items, .. }) => items.push(value),
            Some(Open::Map { map, key, .. }) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        Value::Null => "null".to_owned(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        Value::Array(_) | Value::Object(_) => {
                            return Err(YamlError::ComplexKey { line: mark.line() })
                        }
                    };
                    if map.contains_key(&k) {
                        return Err(YamlError::DuplicateKey {
                            line: mark.line(),
                            key: k,
                        });
                    }
                    *key = Some(k);
                }
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
        Ok(())
    }
}

/// A plain scalar as YAML 1.2's core schema reads it.
fn resolve(text: &str, mark: &Marker) -> Result<Value, YamlError> {
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => match yaml_rust2::Yaml::from_str(text) {
            yaml_rust2::Yaml::Integer(i) => Value::from(i),
            yaml_rust2::Yaml::Real(r) => match r.parse::<f64>().ok().and_then(Number::from_f64) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(YamlError::BadNumber {
                        line: mark.line(),
                        text: r,
                    })
                }
            },
            _ => Value::String(text.to_owned()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_scalars_collections_and_documents() {
        let v = parse_one(
            "a: 1\nb: [x, 'true', true, ~, 1.5]\nc: {d: e}\n\"q\": !unsafe '{{ x }}'\n",
            Limits::VARS,
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"a": 1, "b": ["x", "true", true, null, 1.5], "c": {"d": "e"}, "q": "{{ x }}"})
        );
        assert_eq!(
            parse("--- 1\n--- [2]\n", Limits::FILE).unwrap(),
            vec![json!(1), json!([2])]
        );
        assert_eq!(parse_one("", Limits::VARS).unwrap(), Value::Null);
        assert_eq!(parse_one("!!str 12", Limits::VARS).unwrap(), json!("12"));
    }

    #[test]
    fn aliases_expand_within_the_budget() {
        let v = parse_one(
            "base: &b {user: app, port: 22}\nweb: *b\nlist: &l [1, 2]\nagain: *l\n",
            Limits::VARS,
        )
        .unwrap();
        assert_eq!(v["web"], json!({"user": "app", "port": 22}));
        assert_eq!(v["again"], json!([1, 2]));
    }

    /// The attack from the issue: nine levels of ten aliases each, a few hundred bytes.
    fn laughs(levels: usize) -> String {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=levels {
            let prev = format!("*a{}", i - 1);
            let refs = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        text
    }

    #[test]
    fn a_billion_laughs_is_refused_before_it_grows() {
        let text = laughs(9);
        assert!(text.len() < 1024, "{}", text.len());
        let start = std::time::Instant::now();
        let err = parse(&text, Limits::FILE).unwrap_err();
        assert!(
            matches!(err, YamlError::TooManyNodes { max: 500_000, .. }),
            "{err}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // Fewer levels fit, and are counted as what they expand to.
        assert!(parse(&laughs(3), Limits::FILE).is_ok());
        assert!(matches!(
            parse(&laughs(4), Limits::VARS).unwrap_err(),
            YamlError::TooManyNodes { .. }
        ));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = "- ".repeat(1_000_000) + "x\n";
        let err = parse(&deep, Limits::FILE).unwrap_err();
        assert!(matches!(err, YamlError::TooDeep { max: 64, .. }), "{err}");
        // yaml-rust2's scanner refuses very deep flow nesting itself, ahead of the parser…
        let flow = "[".repeat(100_000);
        assert!(matches!(
            parse(&flow, Limits::VARS).unwrap_err(),
            YamlError::Syntax(m) if m.contains("recursion limit")
        ));
        // …and the depth limit holds below its own.
        let flow = "[".repeat(40) + &"]".repeat(40);
        assert!(matches!(
            parse(&flow, Limits::VARS).unwrap_err(),
            YamlError::TooDeep { max: 32, .. }
        ));
        // An alias of a deep anchor counts its height where it is used.
        let mut text = String::from("a: &d ");
        text.push_str(&"[".repeat(30));
        text.push_str(&"]".repeat(30));
        text.push_str("\nb: {c: {d: *d}}\n");
        assert!(matches!(
            parse(&text, Limits::VARS).unwrap_err(),
            YamlError::TooDeep { .. }
        ));
    }

    #[test]
    fn size_keys_and_aliases_are_checked() {
        let big = "x".repeat(Limits::VARS.max_bytes + 1);
        assert!(matches!(
            parse(&big, Limits::VARS).unwrap_err(),
            YamlError::TooLarge { .. }
        ));
        assert!(matches!(
            parse("a: 1\na: 2\n", Limits::VARS).unwrap_err(),
            YamlError::DuplicateKey { .. }
        ));
        assert!(matches!(
            parse("? [a]\n: 1\n", Limits::VARS).unwrap_err(),
            YamlError::ComplexKey { .. }
        ));
        assert!(parse("a: *nothing\n", Limits::VARS).is_err());
        assert!(matches!(
            parse("--- 1\n--- 2\n", Limits::VARS).unwrap_err(),
            YamlError::TooManyDocuments { .. }
        ));
        assert!(matches!(
            parse("a: [unclosed\n", Limits::VARS).unwrap_err(),
            YamlError::Syntax(_)
        ));
    }
}
