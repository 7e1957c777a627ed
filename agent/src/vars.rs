//! A job's variables as ansible reads them: launch values written as a YAML vars file in which
//! every string, keys included, carries ansible's `!unsafe` tag, so that ansible never
//! evaluates a template in them (checked with ansible-core 2.19, nested values included).
//!
//! The file is one line of YAML flow style. Strings are double-quoted with every character
//! outside printable ASCII escaped, because PyYAML refuses some characters outright (DEL, C1
//! controls) and reads others as line breaks (NEL, U+2028) that would change the value.

use serde_json::Value;

/// `vars` (a JSON object) as a YAML document whose strings are all `!unsafe`.
pub fn unsafe_yaml(vars: &serde_json::Map<String, Value>) -> String {
    let mut out = String::with_capacity(64);
    write_map(&mut out, vars);
    out.push('\n');
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>) {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, v);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // YAML 1.1 (PyYAML) reads `1e20` as a string: say what a float is.
        Value::Number(n) if n.is_f64() => {
            out.push_str("!!float ");
            out.push_str(&n.to_string());
        }
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_map(out, map),
    }
}

fn write_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push_str("!unsafe \"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_string_is_tagged_and_escaped() {
        let vars = json!({
            "greeting": "{{ lookup('pipe', 'id') }}",
            "nested": {"{{ k }}": ["a\"b\\c", 1, 2.5, true, null, {}, []]},
            "odd": "tab\tnel\u{85}del\u{7f}é😀\n",
        });
        let text = unsafe_yaml(vars.as_object().unwrap());
        assert_eq!(
            text,
            concat!(
                r#"{!unsafe "greeting": !unsafe "{{ lookup('pipe', 'id') }}", "#,
                r#"!unsafe "nested": {!unsafe "{{ k }}": [!unsafe "a\"b\\c", 1, !!float 2.5, true, null, {}, []]}, "#,
                r#"!unsafe "odd": !unsafe "tab\u0009nel\u0085del\u007F\u00E9\U0001F600\u000A"}"#,
                "\n"
            )
        );
        assert!(text.is_ascii());
    }

    #[test]
    fn an_empty_object_is_an_empty_mapping() {
        assert_eq!(unsafe_yaml(&serde_json::Map::new()), "{}\n");
    }
}
