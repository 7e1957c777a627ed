//! A template's survey: typed questions an admin writes, and the answers a launcher gives.
//!
//! [`check_definition`] holds the admin's survey to its limits (how many questions, how long,
//! defaults valid for their type, choices unique and non-empty). [`answer`] turns a launch's
//! answers into variables, or names each bad field with why. Answers are data: they reach
//! ansible marked `!unsafe` like every launch value, and secret answers never join the other
//! variables (they are sealed and handed to the agent apart, see [`Answers::secrets`]).

pub mod sealing;

use outpost_api::{FieldError, Question, QuestionKind};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// Questions in one survey at most.
pub const MAX_QUESTIONS: usize = 50;
/// A label's length at most, in characters.
const MAX_LABEL: usize = 200;
/// A help text's length at most.
const MAX_HELP: usize = 1000;
/// Choices of one question at most.
const MAX_CHOICES: usize = 100;
/// A choice's length at most.
const MAX_CHOICE: usize = 200;
/// The longest answer `max_length` may allow (text and multiline), and the one it defaults to.
const MAX_TEXT: u32 = 64 * 1024;
const DEFAULT_TEXT: u32 = 1024;
/// The longest secret answer (a password, a token).
const MAX_SECRET: u32 = 4096;
/// A whole survey's size as JSON at most.
pub const MAX_SURVEY_BYTES: usize = 256 * 1024;
/// A variable name's length at most (as [`crate::vars`]).
const MAX_NAME: usize = 128;

/// A launch's answers, checked: `vars` join the launch's variables, `secrets` are sealed.
#[derive(Default)]
pub struct Answers {
    pub vars: Map<String, Value>,
    /// (name, value) of each secret answer given, in question order.
    pub secrets: Vec<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("vars", &self.vars)
            .field(
                "secrets",
                &self.secrets.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Answers {
    /// The secrets as one JSON object, for sealing (wiped when dropped).
    pub fn secrets_json(&self) -> Zeroizing<Vec<u8>> {
        let mut map = Map::new();
        for (k, v) in &self.secrets {
            map.insert(k.clone(), Value::String(v.as_str().to_owned()));
        }
        let bytes = serde_json::to_vec(&map).unwrap_or_default();
        // The map's own copies go with it; only the sealed form leaves.
        for (_, v) in map.iter_mut() {
            if let Value::String(s) = v {
                zeroize::Zeroize::zeroize(s);
            }
        }
        Zeroizing::new(bytes)
    }

    /// The answers as the audit trail and the job show them: secrets masked.
    pub fn masked(&self) -> Map<String, Value> {
        let mut out = self.vars.clone();
        for (k, _) in &self.secrets {
            out.insert(k.clone(), Value::String(outpost_api::MASK.into()));
        }
        out
    }
}

fn issue(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A name ansible takes as a variable (the rule of [`crate::vars`]).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks an admin's survey. Each problem is named by `survey.<name>.<field>` (or
/// `survey[<index>]` where the name itself is bad).
pub fn check_definition(survey: &[Question]) -> Result<(), Vec<FieldError>> {
    if survey.len() > MAX_QUESTIONS {
        return Err(vec![issue(
            "survey",
            format!(
                "{} questions; a survey has at most {MAX_QUESTIONS}",
                survey.len()
            ),
        )]);
    }
    let size = serde_json::to_vec(survey)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_SURVEY_BYTES {
        return Err(vec![issue(
            "survey",
            format!("{size} bytes as JSON; at most {MAX_SURVEY_BYTES}"),
        )]);
    }
    let mut out = Vec::new();
    for (i, q) in survey.iter().enumerate() {
        if !valid_name(&q.name) {
            out.push(issue(
                format!("survey[{i}].name"),
                format!("a variable name is a letter or _ followed by letters, digits or _ (at most {MAX_NAME} characters)"),
            ));
            continue;
        }
        let at = |f: &str| format!("survey.{}.{f}", q.name);
        if q.name.starts_with("ansible_") {
            out.push(issue(
                at("name"),
                "variables named ansible_* change how ansible reaches hosts: no survey sets them",
            ));
        }
        if survey[..i].iter().any(|o| o.name == q.name) {
            out.push(issue(at("name"), "asked twice"));
        }
        if let Some(e) = text_limit(q.label.as_deref(), MAX_LABEL) {
            out.push(issue(at("label"), e));
        }
        if let Some(e) = text_limit(q.help.as_deref(), MAX_HELP) {
            out.push(issue(at("help"), e));
        }
        check_shape(q, &at, &mut out);
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}

fn text_limit(s: Option<&str>, max: usize) -> Option<String> {
    let s = s?;
    if s.chars().count() > max {
        return Some(format!("at most {max} characters"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Some("control characters are not allowed".into());
    }
    None
}

/// The fields of a question's kind, and only those; a default its own answer check accepts.
fn check_shape(q: &Question, at: &dyn Fn(&str) -> String, out: &mut Vec<FieldError>) {
    use QuestionKind::*;
    let texty = matches!(q.kind, Text | Multiline | Secret);
    let listed = matches!(q.kind, Choice | MultiChoice);
    let kind = q.kind.as_str();
    if q.max_length.is_some() && !texty {
        out.push(issue(
            at("max_length"),
            format!("not a field of a {kind} question"),
        ));
    }
    if (q.min.is_some() || q.max.is_some()) && q.kind != Integer {
        out.push(issue(
            at("min"),
            format!("min and max are not fields of a {kind} question"),
        ));
    }
    if !q.choices.is_empty() && !listed {
        out.push(issue(
            at("choices"),
            format!("not a field of a {kind} question"),
        ));
    }
    let cap = if q.kind == Secret {
        MAX_SECRET
    } else {
        MAX_TEXT
    };
    if let Some(n) = q.max_length {
        if n == 0 || n > cap {
            out.push(issue(at("max_length"), format!("1 to {cap}")));
        }
    }
    if let (Some(lo), Some(hi)) = (q.min, q.max) {
        if lo > hi {
            out.push(issue(at("min"), format!("min {lo} is above max {hi}")));
        }
    }
    if listed {
        if q.choices.is_empty() || q.choices.len() > MAX_CHOICES {
            out.push(issue(at("choices"), format!("1 to {MAX_CHOICES} choices")));
        }
        for (i, c) in q.choices.iter().enumerate() {
            if c.trim().is_empty()
                || c.chars().count() > MAX_CHOICE
                || c.chars().any(char::is_control)
            {
                out.push(issue(
                    at("choices"),
                    format!(
                        "choice {}: 1 to {MAX_CHOICE} characters, not blank, no control characters",
                        i + 1
                    ),
                ));
            } else if q.choices[..i].contains(c) {
                out.push(issue(at("choices"), format!("{c:?} is listed twice")));
            } else if q.kind == MultiChoice && c.contains(',') {
                // The command line gives a multi-choice answer as `a,b`.
                out.push(issue(
                    at("choices"),
                    format!("{c:?}: a multi-choice choice has no ','"),
                ));
            }
        }
    }
    if let Some(d) = &q.default {
        if q.kind == Secret {
            out.push(issue(
                at("default"),
                "a secret question has no default: it would be stored in the clear with the template",
            ));
        } else if let Err(e) = check_value(q, d) {
            out.push(issue(at("default"), format!("not a valid answer: {e}")));
        }
    }
}

/// Checks a launch's `answers` against `survey`: every answer known, every required question
/// answered, every value valid for its question. Defaults fill what is not answered. Empty
/// text and null count as not answered (a form sends empty fields).
pub fn answer(
    survey: &[Question],
    answers: &Map<String, Value>,
) -> Result<Answers, Vec<FieldError>> {
    let mut out = Answers::default();
    let mut bad = Vec::new();
    for name in answers.keys() {
        if !survey.iter().any(|q| &q.name == name) {
            let shown = crate::text::fit_chars(name, 64).escape_debug().to_string();
            bad.push(issue(shown, "not a question of this template's survey"));
        }
    }
    for q in survey {
        let given = answers.get(&q.name).filter(|v| !is_blank(v));
        let value = match (given, &q.default) {
            (Some(v), _) => v,
            (None, Some(d)) if q.kind != QuestionKind::Secret => d,
            (None, _) => {
                if q.required {
                    bad.push(issue(&q.name, "an answer is required"));
                }
                continue;
            }
        };
        match check_value(q, value) {
            Ok(Value::String(s)) if q.kind == QuestionKind::Secret => {
                out.secrets.push((q.name.clone(), Zeroizing::new(s)));
            }
            Ok(v) => {
                out.vars.insert(q.name.clone(), v);
            }
            Err(e) => bad.push(issue(&q.name, e)),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(bad)
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// One answer for one question: the value the variable gets, or why not (never quoting a
/// secret).
fn check_value(q: &Question, v: &Value) -> Result<Value, String> {
    use QuestionKind::*;
    match q.kind {
        Text | Multiline | Secret => {
            let Value::String(s) = v else {
                return Err("must be text".into());
            };
            let default = if q.kind == Secret {
                MAX_SECRET
            } else {
                DEFAULT_TEXT
            };
            let max = q.max_length.unwrap_or(default) as usize;
            let n = s.chars().count();
            if n > max {
                return Err(format!("{n} characters; at most {max}"));
            }
            let allowed = |c: char| q.kind == Multiline && matches!(c, '\n' | '\r' | '\t');
            if s.chars().any(|c| c.is_control() && !allowed(c)) {
                return Err(match q.kind {
                    Text => "one line, without control characters".into(),
                    _ => "control characters are not allowed".into(),
                });
            }
            Ok(Value::String(s.clone()))
        }
        Integer => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            }
            .ok_or("must be a whole number")?;
            if let Some(lo) = q.min.filter(|lo| n < *lo) {
                return Err(format!("{n} is below the minimum {lo}"));
            }
            if let Some(hi) = q.max.filter(|hi| n > *hi) {
                return Err(format!("{n} is above the maximum {hi}"));
            }
            Ok(Value::from(n))
        }
        Choice => {
            let Value::String(s) = v else {
                return Err("must be one of the choices, as text".into());
            };
            if !q.choices.contains(s) {
                return Err(format!("must be one of: {}", q.choices.join(", ")));
            }
            Ok(Value::String(s.clone()))
        }
        MultiChoice => {
            let picked: Vec<&str> = match v {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().ok_or("each choice is text"))
                    .collect::<Result<_, _>>()?,
                Value::String(s) => s.split(',').map(str::trim).collect(),
                _ => return Err("must be a list of choices".into()),
            };
            if picked.len() > q.choices.len() {
                return Err("more picks than choices".into());
            }
            for (i, p) in picked.iter().enumerate() {
                if !q.choices.iter().any(|c| c == p) {
                    let shown = crate::text::fit_chars(p, 64).escape_debug().to_string();
                    return Err(format!(
                        "{shown:?} is not a choice (choices: {})",
                        q.choices.join(", ")
                    ));
                }
                if picked[..i].contains(p) {
                    return Err(format!("{p:?} is picked twice"));
                }
            }
            if q.required && picked.is_empty() {
                return Err("pick at least one".into());
            }
            Ok(Value::Array(
                picked
                    .into_iter()
                    .map(|p| Value::String(p.into()))
                    .collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests;
